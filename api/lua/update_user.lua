-- Updates fields of an existing user and optionally ends its sessions.
-- KEYS[1]  user hash
-- KEYS[2]  the user's sessions (sorted set of session ids)
-- KEYS[3]  the set of enabled admins' ids
-- KEYS[4]  the hash of the user making the change (KEYS[1] for one's own)
-- KEYS[5]  the user's sessions as kept before the cap (plain set; may be absent)
-- ARGV[1]  session key prefix (a session key is prefix .. session id)
-- ARGV[2]  which sessions to end: 'none' | 'all' | 'others'
-- ARGV[3]  session id kept by 'others' (the caller's own)
-- ARGV[4..] field, value pairs to set
-- Returns  {'updated', fields after the update (HGETALL)} | {'missing'}
--          | {'last_admin'}
-- Invariant: a password change or a disable and the end of the sessions it
-- implies happen together; no token of an ended session works afterwards.
-- The store never loses its last enabled admin: a change that would demote
-- or disable it is refused, checked and applied in one step, so two admins
-- demoting each other at the same moment cannot both succeed.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local function enabled_admin(role, disabled)
  return role == 'admin' and disabled == '0'
end
local before = redis.call('HMGET', KEYS[1], 'id', 'role', 'disabled')
local id = before[1]
local role, disabled = before[2], before[3]
for i = 4, #ARGV, 2 do
  if ARGV[i] == 'role' then role = ARGV[i + 1] end
  if ARGV[i] == 'disabled' then disabled = ARGV[i + 1] end
end
-- Admins made before the set existed join it when first seen: the target
-- and the admin acting on it.
for _, key in ipairs({KEYS[1], KEYS[4]}) do
  local user = redis.call('HMGET', key, 'id', 'role', 'disabled')
  if user[1] and enabled_admin(user[2], user[3]) then
    redis.call('SADD', KEYS[3], user[1])
  end
end
if enabled_admin(before[2], before[3]) and not enabled_admin(role, disabled) then
  if redis.call('SCARD', KEYS[3]) <= 1 then
    return {'last_admin'}
  end
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if enabled_admin(role, disabled) then
  redis.call('SADD', KEYS[3], id)
else
  redis.call('SREM', KEYS[3], id)
end
if ARGV[2] ~= 'none' then
  for _, session in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if ARGV[2] == 'all' or session ~= ARGV[3] then
      redis.call('DEL', ARGV[1] .. session)
      redis.call('ZREM', KEYS[2], session)
    end
  end
  for _, session in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if ARGV[2] == 'all' or session ~= ARGV[3] then
      redis.call('DEL', ARGV[1] .. session)
      redis.call('SREM', KEYS[5], session)
    end
  end
end
return {'updated', redis.call('HGETALL', KEYS[1])}
