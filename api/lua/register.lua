-- Creates a user unless its email is taken.
-- KEYS[1]  email index (normalised email -> user id)
-- KEYS[2]  user hash
-- KEYS[3]  users lex index
-- KEYS[4]  the set of enabled admins' ids
-- ARGV[1]  user id          ARGV[2] normalised email   ARGV[3] name
-- ARGV[4]  role             ARGV[5] argon2id PHC hash  ARGV[6] created_at (RFC 3339)
-- ARGV[7]  index member
-- Returns  {1} when created, {0, existing_user_id} when the email is taken.
-- Invariant: at most one user per normalised email; the index and the user
-- appear together or not at all. An admin is in the admins set from the start.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2],
  'id', ARGV[1], 'email', ARGV[2], 'name', ARGV[3], 'role', ARGV[4],
  'disabled', '0', 'password_hash', ARGV[5], 'created_at', ARGV[6])
redis.call('ZADD', KEYS[3], 0, ARGV[7])
if ARGV[4] == 'admin' then
  redis.call('SADD', KEYS[4], ARGV[1])
end
return {1}
