-- Shared by the scripts that take a write token: `scripts.rs` puts this
-- chunk before their own source, so the bucket is written once.
-- take_write_token(bucket, size, refill_ms) takes one token from a user's
-- write bucket (hash: tokens, at_ms; `size` tokens in a burst, one back
-- every `refill_ms`) and returns nil, or returns the ms until one comes
-- back, having written nothing.
-- Invariant: over any interval T a user makes at most size + T / refill
-- writes through the scripts that take a token, on however many API
-- replicas. Time is the master's clock (TIME).
local function take_write_token(bucket, size, refill_ms)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local state = redis.call('HMGET', bucket, 'tokens', 'at_ms')
  local tokens, at = tonumber(state[1]) or size, tonumber(state[2]) or now
  tokens = math.min(size, tokens + math.max(now - at, 0) / refill_ms)
  if tokens < 1 then
    return math.ceil((1 - tokens) * refill_ms)
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens - 1), 'at_ms', now)
  redis.call('PEXPIRE', bucket, math.ceil(size * refill_ms))
  return nil
end

