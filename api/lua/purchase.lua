-- Buys every line of an order or none, once per idempotency key, and takes
-- the buyer's write token in the same round trip (lib/write_bucket.lua).
-- KEYS[1]  idempotency record of (user, key) (lib/purchase_record.lua)
-- KEYS[2]  new purchase hash
-- KEYS[3]  purchase log (stream: one entry per purchase, field `id`)
-- KEYS[4]  the user's purchases index
-- KEYS[5]  the user's write bucket
-- KEYS[6..] product hashes, one per line, in the order of the ARGV lines
-- ARGV[1]  request fingerprint    ARGV[2] now (ms)
-- ARGV[3]  in-flight window (ms)  ARGV[4] idempotency key lifetime (s)
-- ARGV[5]  purchase id            ARGV[6] user id
-- ARGV[7]  store currency         ARGV[8] created_at (RFC 3339)
-- ARGV[9]  index member
-- ARGV[10] write bucket size      ARGV[11] ms for one write token to come back
-- ARGV[12..] product id, quantity pairs (distinct products, quantities > 0)
-- Returns  {'created', fields} | {'replayed', fields} | {'in_flight'} | {'key_reused'}
--          | {'limited', retry_after_ms}
--          | {'not_found', product_id} | {'archived', product_id}
--          | {'insufficient', product_id, available}
-- Invariants: stock never goes below zero; all lines are taken or none; the
-- total comes from the stored prices; one key makes at most one purchase;
-- every attempt (a replay too) takes a write token, and a refused one
-- changes nothing.
local retry_after_ms = take_write_token(KEYS[5], tonumber(ARGV[10]), tonumber(ARGV[11]))
if retry_after_ms then
  return {'limited', retry_after_ms}
end

local record = read_purchase_record(KEYS[1])
if record then
  if record.fingerprint ~= ARGV[1] then
    return {'key_reused'}
  end
  if record.state == 'pending' and tonumber(ARGV[2]) - record.created_ms < tonumber(ARGV[3]) then
    return {'in_flight'}
  end
  -- A write, so that the caller's WAIT also covers the original purchase:
  -- the replay is sent only once the purchase is on the replicas.
  write_purchase_record_state(KEYS[1], 'completed')
  -- The original purchase's key: this order's KEYS[2] with the original id.
  return {'replayed', redis.call('HGETALL', string.sub(KEYS[2], 1, -37) .. record.purchase_id)}
end

local lines = {}
local total = 0
for i = 1, (#ARGV - 11) / 2 do
  local product_id = ARGV[10 + 2 * i]
  local quantity = tonumber(ARGV[11 + 2 * i])
  local product = redis.call('HMGET', KEYS[5 + i], 'stock', 'price_cents', 'name', 'archived')
  if not product[1] then
    return {'not_found', product_id}
  end
  if product[4] == '1' then
    return {'archived', product_id}
  end
  if tonumber(product[1]) < quantity then
    return {'insufficient', product_id, product[1]}
  end
  local price = tonumber(product[2])
  lines[i] = string.format('{"product_id":"%s","name":%s,"unit_price_cents":%d,"quantity":%d}',
    product_id, cjson.encode(product[3]), price, quantity)
  total = total + price * quantity
end

for i = 1, #lines do
  redis.call('HINCRBY', KEYS[5 + i], 'stock', -tonumber(ARGV[11 + 2 * i]))
end
redis.call('HSET', KEYS[2],
  'id', ARGV[5], 'user_id', ARGV[6], 'items', '[' .. table.concat(lines, ',') .. ']',
  'total_cents', string.format('%d', total), 'currency', ARGV[7],
  'status', 'completed', 'created_at', ARGV[8])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[5])
redis.call('ZADD', KEYS[4], 0, ARGV[9])
redis.call('SET', KEYS[1], 'pending|' .. ARGV[2] .. '|' .. ARGV[5] .. '|' .. ARGV[1],
  'EX', ARGV[4])
return {'created', redis.call('HGETALL', KEYS[2])}
