-- Reserves one password check (a sign-in, a password change) before the
-- slow hash runs.
-- KEYS[1]  failures of this account from this address (counter, expires with the window)
-- KEYS[2]  failures from this address, whatever the account (counter, same)
-- KEYS[3]  the account's budget of checks from unknown addresses (hash: tokens, at_ms)
-- KEYS[4]  addresses the account signed in from (sorted set: address -> ms)
-- ARGV[1]  the client address
-- ARGV[2]  failures allowed per account and address in a window
-- ARGV[3]  failures allowed per address in a window
-- ARGV[4]  the window, in seconds
-- ARGV[5]  the budget: checks from unknown addresses in a burst
-- ARGV[6]  ms for one spent check to come back to the budget
-- Returns  {'reserved', 'known' | 'unknown'}
--          | {'refused', 'address' | 'account', retry_after_ms}
-- Invariant: a check is counted before it runs, so guesses sent at once
-- count as many, and every reserved check counts as a failure until
-- password_check_passed.lua records its success. Failures from one address
-- never refuse another address. Addresses the account never signed in from
-- share its budget, which slows guessing down from many addresses; an
-- address it did sign in from is never refused by the budget, so a stranger
-- cannot lock the owner out. Time is the master's clock (TIME).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[4])
local known = redis.call('ZSCORE', KEYS[4], ARGV[1])
-- An address the account signed in from is not held to the limit of the
-- address as a whole: others behind the same NAT cannot shut the owner out.
local limits = {tonumber(ARGV[2])}
if not known then
  limits[2] = tonumber(ARGV[3])
end
for i, limit in ipairs(limits) do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= limit then
    return {'refused', 'address', math.max(redis.call('PTTL', KEYS[i]), 1)}
  end
end
local origin = 'known'
if not known then
  origin = 'unknown'
  local size, refill_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
  local budget = redis.call('HMGET', KEYS[3], 'tokens', 'at_ms')
  local tokens, at = tonumber(budget[1]) or size, tonumber(budget[2]) or now
  tokens = math.min(size, tokens + math.max(now - at, 0) / refill_ms)
  if tokens < 1 then
    return {'refused', 'account', math.ceil((1 - tokens) * refill_ms)}
  end
  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'at_ms', now)
  redis.call('PEXPIRE', KEYS[3], math.ceil(size * refill_ms))
end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('EXPIRE', KEYS[i], window)
  end
end
return {'reserved', origin}
