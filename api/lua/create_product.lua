-- Creates a product unless its SKU is taken, and lists it.
-- KEYS[1]  product hash          KEYS[2] SKU index (sku -> product id)
-- KEYS[3]  all by creation       KEYS[4] all by price
-- KEYS[5]  category by creation  KEYS[6] category by price
-- ARGV[1]  product id   ARGV[2] creation member   ARGV[3] price member
-- ARGV[4..] field, value pairs of the product
-- Returns  {1} when created, {0, existing_product_id} when the SKU is taken.
-- Invariant: SKUs are unique; a product is in its four indexes exactly when it
-- is not archived.
local existing = redis.call('GET', KEYS[2])
if existing then
  return {0, existing}
end
redis.call('SET', KEYS[2], ARGV[1])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('ZADD', KEYS[4], 0, ARGV[3])
redis.call('ZADD', KEYS[5], 0, ARGV[2])
redis.call('ZADD', KEYS[6], 0, ARGV[3])
return {1}
