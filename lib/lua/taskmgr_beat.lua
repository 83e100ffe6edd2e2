-- taskmgr_beat: an agent's heartbeat in one step: the host's hash and its place in the set of
-- hosts; then, for the VMs placed on that host whose power state differs from the report,
-- their id and version (VMs a task is building or disposing are the task's to write: their
-- version must not move under the task).
-- KEYS: host hash, hosts set, then one VM hash per reported domain.
-- ARGV: host id, n, n field/value pairs, then one name/state pair per VM key, in that order.
-- Returns id, version, power_state triples of the VMs to update.
-- retry: safe (the same hash and set written again; the rest reads)
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
redis.call('SADD', KEYS[2], ARGV[1])
local out = {}
local k = 3
for i = 3 + 2 * n, #ARGV, 2 do
  local v = redis.call('HMGET', KEYS[k], 'host', 'power_state', 'state', 'version')
  k = k + 1
  if v[1] == ARGV[1] and v[2] ~= ARGV[i + 1] and v[3] == 'ACTIVE' then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = v[4] or '0'
    out[#out + 1] = ARGV[i + 1]
  end
end
return out
