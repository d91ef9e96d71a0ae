-- Adds a signed delta to a product's stock.
-- KEYS[1]  product hash
-- ARGV[1]  delta (integer, may be negative)   ARGV[2] largest allowed stock
-- ARGV[3]  updated_at
-- Returns  {'ok', fields} | {'missing'} | {'insufficient', current} | {'too_large', current}
-- Invariant: stock never goes below zero nor above the maximum.
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
return {'ok', redis.call('HGETALL', KEYS[1])}
