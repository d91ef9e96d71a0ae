-- Marks a purchase's idempotency record settled: its request is over
-- (confirmed or not), so a retry with the same key replays at once instead
-- of getting 409 until the in-flight window ends. The API sends it right
-- after the purchase's WAIT, in the same round trip, and again on its own
-- when that round trip broke off.
-- KEYS[1]  idempotency record of (user, key) (lib/purchase_record.lua)
-- ARGV[1]  the state to record: 'completed'
-- Returns  1 if a record was settled, 0 if there is none (the order was
--          refused, or the purchase was lost with a demoted master)
-- Invariant: never creates a record, so a retry of a purchase that left
-- none buys anew; never answers an error (pcall: a full Redis refusing the
-- write), since it shares its round trip with a confirmed purchase whose
-- reply an error would replace.
if not read_purchase_record(KEYS[1]) then
  return 0
end
local settled = write_purchase_record_state(KEYS[1], ARGV[1])
if type(settled) == 'table' and settled.err then
  return 0
end
return 1
