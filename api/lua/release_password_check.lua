-- Gives back a reserved password check that reached no verdict (Redis or
-- the hashing threads failed before the password was compared).
-- KEYS[1]  failures of this account from this address
-- KEYS[2]  failures from this address, whatever the account
-- ARGV[1]  none
-- Returns  {'released'}
-- Invariant: only a wrong password counts as a failure; an outage cannot be
-- used to push the owner's own attempts over the limits. Counters that
-- expired meanwhile are left alone (never below zero, never without expiry).
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then
    redis.call('DECR', KEYS[i])
  end
end
return {'released'}
