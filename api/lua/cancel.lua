-- Cancels a completed purchase and puts its items back in stock, once.
-- KEYS[1]  purchase hash
-- KEYS[2..] product hashes of its items, in the order of its `items` field
-- ARGV[1]  cancelled_at (RFC 3339)
-- ARGV[2]  id of the session asking (recorded as `cancelled_by`)
-- Returns  {'cancelled', fields} | {'replayed', fields} | {'missing'}
--          | {'already_cancelled'} | {'mismatch'}
-- Invariant: stock is given back exactly once per purchase, together with the
-- status change. A session that cancelled the purchase and asks again (its
-- first answer was a 503, or never arrived) gets the cancelled purchase back:
-- 'replayed'. Any other caller learns that it is already cancelled.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'missing'}
end
if status ~= 'completed' then
  if redis.call('HGET', KEYS[1], 'cancelled_by') == ARGV[2] then
    -- A write, so that the caller's WAIT also covers the original cancel.
    redis.call('HSET', KEYS[1], 'cancelled_by', ARGV[2])
    return {'replayed', redis.call('HGETALL', KEYS[1])}
  end
  return {'already_cancelled'}
end
local items = cjson.decode(redis.call('HGET', KEYS[1], 'items'))
if #items ~= #KEYS - 1 then
  return {'mismatch'}
end
for i, item in ipairs(items) do
  if string.sub(KEYS[1 + i], -#item.product_id) ~= item.product_id then
    return {'mismatch'}
  end
end
for i, item in ipairs(items) do
  redis.call('HINCRBY', KEYS[1 + i], 'stock', item.quantity)
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[1],
  'cancelled_by', ARGV[2])
return {'cancelled', redis.call('HGETALL', KEYS[1])}
