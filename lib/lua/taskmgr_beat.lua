-- taskmgr_beat: an agent's heartbeat in one step: the host's hash (its heartbeat fields, never
-- its state: taskmgr moves that through the lifecycle table), its place in the set of hosts and
-- in the seen zset (scored by when this beat's ttl runs out); then, for the VMs placed on
-- that host whose power state differs from the report, their id and version (VMs a task is
-- building or disposing are the task's to write: their version must not move under the task);
-- and, on a full beat, the reported domains that are not a VM of Berth on this host (orphans).
-- KEYS: host hash, hosts set, hosts-seen zset, then one VM hash per reported domain.
-- ARGV: host id, expiry (unix ms), full ('1' when every domain of ours is passed), now (unix
--       ms), guard (ms), n, n field/value pairs, then one name/state pair per VM key.
-- A VM written less than guard ms ago (its updated_ms) is not named as changed: the report may
-- come from a snapshot taken before that write (a command's result can overtake the beat that
-- carries the older snapshot); a later beat, once past the guard, names it if it still holds.
-- Returns {state, maintenance, orphans, changes, names, started}: the host's stored state (''
-- when new), its maintenance flag ('1' or ''), its stored orphans field (JSON text, '' when
-- none); changes as flat id, version, new power, old power quadruples; names: the passed
-- domains that are no VM of Berth placed on this host (only on a full beat); started: the
-- agent_started_ms the host holds ('' when none), which the caller compares with the beat's
-- to tell an agent restarted (and reconcile its VMs).
-- retry: safe (the same hash, set and score written again; the rest reads)
local n = tonumber(ARGV[6])
local fresh = tonumber(ARGV[4]) - tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, 6 + 2 * n))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local full = ARGV[3] == '1'
local changes, orphans = {}, {}
local k = 4
for i = 7 + 2 * n, #ARGV, 2 do
  local v = redis.call('HMGET', KEYS[k], 'host', 'power_state', 'state', 'version', 'updated_ms')
  k = k + 1
  if v[1] == ARGV[1] and v[2] ~= ARGV[i + 1] and (v[3] == 'ACTIVE' or v[3] == 'EXPIRING') and
      (tonumber(v[5]) or 0) <= fresh then
    changes[#changes + 1] = ARGV[i]
    changes[#changes + 1] = v[4] or '0'
    changes[#changes + 1] = ARGV[i + 1]
    changes[#changes + 1] = v[2] or ''
  end
  if full and (v[1] ~= ARGV[1] or not v[3] or v[3] == 'DISPOSED' or v[3] == 'REJECTED') then
    orphans[#orphans + 1] = ARGV[i]
  end
end
local h = redis.call('HMGET', KEYS[1], 'state', 'maintenance', 'orphans', 'agent_started_ms')
return {h[1] or '', h[2] == '1' and '1' or '', h[3] or '', changes, orphans, h[4] or ''}
