-- Starts a session and keeps the user's sessions bounded.
-- KEYS[1]  session hash (user_id, refresh_hash)
-- KEYS[2]  the user's sessions (sorted set: session id -> ms of last use)
-- ARGV[1]  user id
-- ARGV[2]  SHA-256 of the refresh token
-- ARGV[3]  session lifetime in seconds
-- ARGV[4]  session key prefix (a session key is prefix .. session id)
-- ARGV[5]  the session id
-- ARGV[6]  most sessions a user may have
-- Returns  {'created', sessions_ended}
-- Invariant: a user never has more than ARGV[6] sessions: beyond that the
-- least recently used ones end, tokens and all. Ids of sessions that expired
-- by themselves leave the set, so it never grows without bound. Time is the
-- master's clock (TIME).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'refresh_hash', ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl * 1000))
redis.call('ZADD', KEYS[2], now, ARGV[5])
local ended = 0
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if excess > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #oldest, 2 do
    redis.call('DEL', ARGV[4] .. oldest[i])
    ended = ended + 1
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
return {'created', ended}
