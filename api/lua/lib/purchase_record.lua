-- Shared by purchase.lua and settle_purchase_key.lua: the idempotency record
-- of one purchase key, a string "<state>|<created ms>|<purchase id>|<fingerprint>"
-- with the key's lifetime (one string is ~100 B less than the hash it
-- replaced). Records written before are hashes (fingerprint, state,
-- created_ms, purchase_key) and are still read until they expire, 24 h
-- after an upgrade.
-- read_purchase_record(key) returns nil or {state, created_ms, purchase_id,
-- fingerprint}; write_purchase_record_state(key, state) changes the state of
-- an existing record, keeping its lifetime, and returns the reply of the write
-- (an error table from redis.pcall when Redis refuses it).
local function read_purchase_record(key)
  local kind = redis.call('TYPE', key).ok
  if kind == 'string' then
    local state, created_ms, purchase_id, fingerprint =
      string.match(redis.call('GET', key), '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    return {state = state, created_ms = tonumber(created_ms),
      purchase_id = purchase_id, fingerprint = fingerprint}
  elseif kind == 'hash' then
    local old = redis.call('HMGET', key, 'fingerprint', 'state', 'created_ms', 'purchase_key')
    return {state = old[2], created_ms = tonumber(old[3]),
      purchase_id = string.sub(old[4], -36), fingerprint = old[1]}
  end
  return nil
end

local function write_purchase_record_state(key, state)
  if redis.call('TYPE', key).ok == 'hash' then
    return redis.pcall('HSET', key, 'state', state)
  end
  local rest = string.match(redis.call('GET', key), '^[^|]*(|.*)$')
  return redis.pcall('SET', key, state .. rest, 'KEEPTTL')
end

