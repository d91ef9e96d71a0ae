-- Shared by the scripts that change a product the caller read at a version
-- (If-Match): `scripts.rs` puts this chunk before their own source.
-- version_refusal(product, expected) returns nil when the product exists at
-- `expected`, else the script's refusal: {'missing'}, or {'version',
-- current_version}, having written nothing.
-- Invariant: no lost update: the version is compared here and bumped in the
-- same script.
local function version_refusal(product, expected)
  local version = redis.call('HGET', product, 'version')
  if not version then
    return {'missing'}
  end
  if version ~= expected then
    return {'version', version}
  end
  return nil
end

