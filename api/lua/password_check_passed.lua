-- Records that a reserved password check found the right password.
-- KEYS[1]  failures of this account from this address
-- KEYS[2]  failures from this address, whatever the account
-- KEYS[3]  addresses the account signed in from (sorted set: address -> ms)
-- ARGV[1]  the client address
-- ARGV[2]  how many addresses to remember per account
-- ARGV[3]  how long to remember them, in seconds
-- Returns  {'recorded'}
-- Invariant: the reservation that counted this check as a failure is taken
-- back, the account's failures from this address are forgiven, and the
-- address becomes one the account's budget never refuses (the most recent
-- ARGV[2] of them). Time is the master's clock (TIME).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  redis.call('DECR', KEYS[2])
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[2]) + 1))
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'recorded'}
