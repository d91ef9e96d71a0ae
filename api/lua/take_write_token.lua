-- Takes one token from a user's write bucket (cancels, stock changes;
-- purchases take theirs inside purchase.lua). The bucket is lib/write_bucket.lua.
-- KEYS[1]  the user's bucket (hash: tokens, at_ms)
-- ARGV[1]  bucket size: writes in a burst
-- ARGV[2]  ms for one token to come back
-- Returns  {'taken'} | {'limited', retry_after_ms}
-- Invariant: as take_write_token in lib/write_bucket.lua; a refused write
-- changes nothing.
local retry_after_ms = take_write_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if retry_after_ms then
  return {'limited', retry_after_ms}
end
return {'taken'}
