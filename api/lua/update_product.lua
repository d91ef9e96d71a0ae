-- Updates a product if it is still at the version the client read (If-Match).
-- KEYS[1]  product hash
-- KEYS[2]  all by price
-- KEYS[3]  old category by creation   KEYS[4] old category by price
-- KEYS[5]  new category by creation   KEYS[6] new category by price
-- ARGV[1]  expected version   ARGV[2] old price member   ARGV[3] new price member
-- ARGV[4]  creation member    ARGV[5] updated_at
-- ARGV[6..] field, value pairs to set
-- Returns  {'ok', fields} | {'missing'} | {'archived'} | {'version', current_version}
-- Invariant: no lost update (the version is compared and bumped atomically);
-- the price and category indexes always match the product's fields. The
-- caller read the old price and category at the expected version, so the old
-- members it passes are exact.
local refusal = version_refusal(KEYS[1], ARGV[1])
if refusal then
  return refusal
end
if redis.call('HGET', KEYS[1], 'archived') == '1' then
  return {'archived'}
end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZADD', KEYS[5], 0, ARGV[4])
redis.call('ZADD', KEYS[6], 0, ARGV[3])
return {'ok', redis.call('HGETALL', KEYS[1])}
