-- Takes one token from a user's write bucket (purchases, cancels, stock changes).
-- KEYS[1]  the user's bucket (hash: tokens, at_ms)
-- ARGV[1]  bucket size: writes in a burst
-- ARGV[2]  ms for one token to come back
-- Returns  {'taken'} | {'limited', retry_after_ms}
-- Invariant: over any interval T a user makes at most size + T / refill
-- writes through the routes that take a token, on however many API
-- replicas; a refused write changes nothing.
-- Time is the master's clock (TIME).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local size, refill_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at_ms')
local tokens, at = tonumber(bucket[1]) or size, tonumber(bucket[2]) or now
tokens = math.min(size, tokens + math.max(now - at, 0) / refill_ms)
if tokens < 1 then
  return {'limited', math.ceil((1 - tokens) * refill_ms)}
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at_ms', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(size * refill_ms))
return {'taken'}
