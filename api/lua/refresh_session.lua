-- Rotates a session's refresh token, or revokes the session on reuse.
-- KEYS[1]  session hash (user_id, refresh_hash)
-- ARGV[1]  SHA-256 of the presented refresh token
-- ARGV[2]  SHA-256 of the new refresh token
-- ARGV[3]  session lifetime in seconds (renewed)
-- ARGV[4]  prefix of the per-user session sets (a set key is prefix .. user id)
-- ARGV[5]  the session id
-- Returns  {'rotated', user_id} | {'missing'} | {'reused'}
-- Invariant: each refresh token works once. Presenting a rotated (or forged)
-- token of a live session means it leaked: the whole session ends. The
-- session id left in the user's session set is harmless (revocation skips it).
-- A renewed session is (back) in its user's session set, which lives at least
-- as long: a password change or a disable must find every live session.
local current = redis.call('HGET', KEYS[1], 'refresh_hash')
if not current then
  return {'missing'}
end
if current ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {'reused'}
end
redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local user_id = redis.call('HGET', KEYS[1], 'user_id')
redis.call('SADD', ARGV[4] .. user_id, ARGV[5])
redis.call('EXPIRE', ARGV[4] .. user_id, ARGV[3])
return {'rotated', user_id}
