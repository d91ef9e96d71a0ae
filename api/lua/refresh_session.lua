-- Rotates a session's refresh token, or revokes the session on reuse.
-- KEYS[1]  session hash (user_id, refresh_hash)
-- ARGV[1]  SHA-256 of the presented refresh token
-- ARGV[2]  SHA-256 of the new refresh token
-- ARGV[3]  session lifetime in seconds (renewed)
-- Returns  {'rotated', user_id} | {'missing'} | {'reused'}
-- Invariant: each refresh token works once. Presenting a rotated (or forged)
-- token of a live session means it leaked: the whole session ends. The
-- session id left in the user's session set is harmless (revocation skips it).
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
return {'rotated', redis.call('HGET', KEYS[1], 'user_id')}
