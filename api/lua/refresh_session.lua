-- Rotates a session's refresh token, or revokes the session on reuse.
-- KEYS[1]  session hash (user_id, refresh_hash, previous_hash, rotated_ms)
-- ARGV[1]  SHA-256 of the presented refresh token
-- ARGV[2]  SHA-256 of its successor (derived from it: always the same one)
-- ARGV[3]  session lifetime in seconds (renewed)
-- ARGV[4]  prefix of the per-user session sets (a set key is prefix .. user id;
--          a sorted set: session id -> ms of last use)
-- ARGV[5]  the session id
-- ARGV[6]  reuse interval (ms); 0: no retry is honoured
-- Returns  {'rotated', user_id, rotated_ms} | {'replayed', user_id, rotated_ms}
--          | {'missing'} | {'reused'}
-- Invariant: each refresh token works once. Presenting a rotated (or forged)
-- token of a live session means it leaked: the whole session ends. The one
-- exception is a retry: the token rotated last, presented again within the
-- reuse interval, gets the same successor again ('replayed'), because a
-- client whose first answer was a 503 or was lost never saw that successor.
-- Time comes from the master's clock (TIME), not from the API replicas,
-- which may disagree. The session id left in the user's session set is
-- harmless (revocation skips it). A renewed session is (back) in its user's
-- session set, as used now, and the set lives at least as long: a password
-- change or a disable must find every live session.
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
local session = redis.call('HMGET', KEYS[1], 'refresh_hash', 'previous_hash', 'rotated_ms',
  'user_id')
local current, previous, rotated_ms, user_id = session[1], session[2], session[3], session[4]
if not current then
  return {'missing'}
end
if current ~= ARGV[1] then
  local since = previous == ARGV[1] and tonumber(now) - tonumber(rotated_ms)
  if since and current == ARGV[2] and since >= 0 and since < tonumber(ARGV[6]) then
    -- A write, so that the caller's WAIT also covers the original rotation.
    redis.call('HSET', KEYS[1], 'rotated_ms', rotated_ms)
    return {'replayed', user_id, rotated_ms}
  end
  redis.call('DEL', KEYS[1])
  return {'reused'}
end
redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2], 'previous_hash', ARGV[1],
  'rotated_ms', now)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', ARGV[4] .. user_id, now, ARGV[5])
redis.call('EXPIRE', ARGV[4] .. user_id, ARGV[3])
return {'rotated', user_id, now}
