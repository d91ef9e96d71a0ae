-- Updates fields of an existing user and optionally ends its sessions.
-- KEYS[1]  user hash
-- KEYS[2]  the user's session-id set
-- ARGV[1]  session key prefix (a session key is prefix .. session id)
-- ARGV[2]  which sessions to end: 'none' | 'all' | 'others'
-- ARGV[3]  session id kept by 'others' (the caller's own)
-- ARGV[4..] field, value pairs to set
-- Returns  the user's fields after the update (HGETALL), or {} if there is no such user.
-- Invariant: a password change or a disable and the end of the sessions it
-- implies happen together; no token of an ended session works afterwards.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= 'none' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if ARGV[2] == 'all' or id ~= ARGV[3] then
      redis.call('DEL', ARGV[1] .. id)
      redis.call('SREM', KEYS[2], id)
    end
  end
end
return redis.call('HGETALL', KEYS[1])
