-- owned_hashes: HGETALL of many hashes in one step; with an owner, a hash whose `owner` field
-- differs comes back as the integer 0 (the caller may not see it, and its fields never leave
-- Redis). Used for pages of VMs (gateway/rest.c).
-- retry: safe (reads only)
-- KEYS: the hashes. ARGV[1]: the owner, or '' for everyone.
local out = {}
for i, key in ipairs(KEYS) do
  if ARGV[1] ~= '' and redis.call('HGET', key, 'owner') ~= ARGV[1] then
    out[i] = 0
  else
    out[i] = redis.call('HGETALL', key)
  end
end
return out
