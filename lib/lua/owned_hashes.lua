-- owned_hashes: HGETALL of many hashes in one step; with an owner, a hash whose `owner` field
-- differs, and whose `group` field is none of the groups given, comes back as the integer 0
-- (the caller may not see it, and its fields never leave Redis). Used for pages of VMs
-- (gateway/rest.c).
-- retry: safe (reads only)
-- KEYS: the hashes. ARGV[1]: the owner, or '' for everyone; ARGV[2..]: group ids whose
-- hashes the caller sees whoever owns them (a manager's or auditor's groups).
local groups = {}
for i = 2, #ARGV do groups[ARGV[i]] = true end
local out = {}
for i, key in ipairs(KEYS) do
  if ARGV[1] ~= '' then
    local f = redis.call('HMGET', key, 'owner', 'group')
    if f[1] == ARGV[1] or (f[2] and groups[f[2]]) then
      out[i] = redis.call('HGETALL', key)
    else
      out[i] = 0
    end
  else
    out[i] = redis.call('HGETALL', key)
  end
end
return out
