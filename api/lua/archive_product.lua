-- Archives a product: it stays readable (past purchases refer to it) but
-- leaves every listing and can no longer be bought.
-- KEYS[1]  product hash
-- KEYS[2]  all by creation        KEYS[3] all by price
-- KEYS[4]  category by creation   KEYS[5] category by price
-- ARGV[1]  version the caller read   ARGV[2] creation member
-- ARGV[3]  price member              ARGV[4] updated_at
-- Returns  {'ok', fields} | {'missing'} | {'version', current_version}
-- Invariant: an archived product is in no index. Archiving twice is harmless.
local refusal = version_refusal(KEYS[1], ARGV[1])
if refusal then
  return refusal
end
if redis.call('HGET', KEYS[1], 'archived') ~= '1' then
  redis.call('HSET', KEYS[1], 'archived', '1', 'updated_at', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[3])
return {'ok', redis.call('HGETALL', KEYS[1])}
