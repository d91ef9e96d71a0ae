-- Adds a signed delta to a product's stock, once per idempotency key.
-- KEYS[1]  product hash
-- KEYS[2]  idempotency record of (admin, key)
-- ARGV[1]  delta (integer, may be negative)   ARGV[2] largest allowed stock
-- ARGV[3]  updated_at                         ARGV[4] request fingerprint
-- ARGV[5]  idempotency key lifetime (s)
-- Returns  {'ok', fields} | {'replayed', fields} | {'key_reused'} | {'missing'}
--          | {'insufficient', current} | {'too_large', current}
-- Invariant: stock never goes below zero nor above the maximum, and one key
-- applies its delta at most once: a retry (after a 503, or a lost answer)
-- gets the product as the first request left it. Refusals (missing,
-- insufficient, too_large) do not consume the key.
local record = redis.call('HMGET', KEYS[2], 'fingerprint', 'response')
if record[1] then
  if record[1] ~= ARGV[4] then
    return {'key_reused'}
  end
  -- A write, so that the caller's WAIT also covers the original delta.
  redis.call('HSET', KEYS[2], 'fingerprint', record[1])
  return {'replayed', cjson.decode(record[2])}
end
local stock = redis.call('HGET', KEYS[1], 'stock')
if not stock then
  return {'missing'}
end
local updated = tonumber(stock) + tonumber(ARGV[1])
if updated < 0 then
  return {'insufficient', stock}
end
if updated > tonumber(ARGV[2]) then
  return {'too_large', stock}
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[2], 'fingerprint', ARGV[4], 'response', cjson.encode(fields))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {'ok', fields}
