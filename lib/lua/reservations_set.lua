-- reservations_set: replace a group's reservations, checking that what grows is free.
-- KEYS: 1 the group, 2 the any-host reservations, 3 the set of reserved hosts, 4 the event
--       stream, then pairs (host, its reservations) of every host (and every host the group
--       reserves on now), then last the group's reservation log.
-- ARGV: 1 group id, 2 the group's version as read (0 = any), 3 now_ms (real: host liveness),
--       4 host_timeout_ms, 5-7 ram/cpu/disk ratios, 8 the group's new `reservations` field
--       (JSON; '' = none), 9 actor, 10 P (the number of KEYS pairs), then the P host ids of the
--       pairs, then quads (host id, '' for any host; vcpus; ram_mb; disk_gb) of the new
--       reservations, hosts among the pairs', then last the platform clock's ms (the log's
--       field and the event's at_ms).
-- The log records the new reservations in all at the platform time (the same ms twice: the
-- later change stands); the event carries the same totals.
-- A reservation that grows must fit in what is free and unreserved now, so it is honoured at
-- once: on a named host, max(0, reserved - what the group's claims hold of it) <= capacity *
-- ratio - used - (other groups' unclaimed reservations there); on any host, the same over the
-- sum of every UP host's max(0, capacity * ratio - used - unclaimed reservations), less the
-- other groups' unclaimed any-host reservations. Shrinking is always allowed (what claims
-- hold beyond it stays theirs until released).
-- Returns {'OK', version}, {'NOT_FOUND'}, {'CONFLICT', version} or {'EXCEEDS', host ('' =
-- any), resource, asked, available}.
local R = {'vcpus', 'ram_mb', 'disk_gb'}
local U = {'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local HOST = {'state', 'last_seen_ms', 'cap_vcpus', 'cap_ram_mb', 'cap_disk_gb',
  'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local function n(v) return tonumber(v) or 0 end
local group, now, timeout = ARGV[1], n(ARGV[3]), n(ARGV[4])
local ratio = {n(ARGV[6]), n(ARGV[5]), n(ARGV[7])}

local version = redis.call('HGET', KEYS[1], 'version')
if not version then return {'NOT_FOUND'} end
if ARGV[2] ~= '0' and ARGV[2] ~= version then return {'CONFLICT', version} end

-- The new reservations by host id ('' = any host).
local P = n(ARGV[10])
local new = {}
local at = ARGV[#ARGV]
for i = 11 + P, #ARGV - 4, 4 do
  new[ARGV[i]] = {n(ARGV[i + 1]), n(ARGV[i + 2]), n(ARGV[i + 3])}
end

-- A reservation hash: other groups' unclaimed total, the group's reserved and used.
local function read(key)
  local rows, others, mine, used = {}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}
  local t = redis.call('HGETALL', key)
  for i = 1, #t, 2 do
    local g, f = string.match(t[i], '^([^:]*):(.+)$')
    if g then rows[g] = rows[g] or {}; rows[g][f] = n(t[i + 1]) end
  end
  for g, r in pairs(rows) do
    for j = 1, 3 do
      if g == group then
        mine[j], used[j] = r[R[j]] or 0, r[U[j]] or 0
      else
        others[j] = others[j] + math.max(0, (r[R[j]] or 0) - (r[U[j]] or 0))
      end
    end
  end
  return others, mine, used
end

-- Named hosts first; their new holdings count in the any-host pool.
local pool = {0, 0, 0}
local hosts = {}
for p = 1, P do
  local i, id = 3 + 2 * p, ARGV[10 + p]
  local h = redis.call('HMGET', KEYS[i], unpack(HOST))
  local others, mine, used = read(KEYS[i + 1])
  local want = new[id] or {0, 0, 0}
  hosts[p] = {KEYS[i + 1], want, id}
  for j = 1, 3 do
    local usable = n(h[2 + j]) * ratio[j]
    local free = usable - n(h[5 + j]) - others[j]
    if want[j] > mine[j] and math.max(0, want[j] - used[j]) > free then
      return {'EXCEEDS', id, R[j], tostring(want[j]),
        tostring(math.max(0, math.floor(free + used[j])))}
    end
    if h[1] == 'UP' and now - n(h[2]) <= timeout then
      local f = free - math.max(0, want[j] - used[j])
      if f > 0 then pool[j] = pool[j] + f end
    end
  end
end
local any_others, any_mine, any_used = read(KEYS[2])
local any_want = new[''] or {0, 0, 0}
for j = 1, 3 do
  local free = pool[j] - any_others[j]
  if any_want[j] > any_mine[j] and math.max(0, any_want[j] - any_used[j]) > free then
    return {'EXCEEDS', '', R[j], tostring(any_want[j]),
      tostring(math.max(0, math.floor(free + any_used[j])))}
  end
end

-- Write: reserved fields set or removed; used counters of a group that reserves nothing
-- there any more go once they are 0 (a release removes them later otherwise).
local function write(key, want)
  local any = false
  for j = 1, 3 do
    if want[j] > 0 then
      redis.call('HSET', key, group .. ':' .. R[j], want[j])
      any = true
    else
      redis.call('HDEL', key, group .. ':' .. R[j])
      if n(redis.call('HGET', key, group .. ':' .. U[j])) <= 0 then
        redis.call('HDEL', key, group .. ':' .. U[j])
      end
    end
  end
  return any
end
write(KEYS[2], any_want)
for _, h in ipairs(hosts) do
  write(h[1], h[2])
  -- Still reserved by some group?
  local reserved = false
  local t = redis.call('HGETALL', h[1])
  for k = 1, #t, 2 do
    if not string.find(t[k], ':used_', 1, true) and n(t[k + 1]) > 0 then reserved = true end
  end
  if reserved then redis.call('SADD', KEYS[3], h[3]) else redis.call('SREM', KEYS[3], h[3]) end
end
if ARGV[8] == '' then
  redis.call('HDEL', KEYS[1], 'reservations')
else
  redis.call('HSET', KEYS[1], 'reservations', ARGV[8])
end
local total = {0, 0, 0}
for _, w in pairs(new) do
  for j = 1, 3 do total[j] = total[j] + w[j] end
end
redis.call('HSET', KEYS[#KEYS], at, string.format('{"vcpus":%d,"ram_mb":%d,"disk_gb":%d}',
  total[1], total[2], total[3]))
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[4], '*', 'type', 'group.updated', 'key', KEYS[1], 'group', group,
  'actor', ARGV[9], 'version', v, 'change', 'reservations', 'vcpus', total[1], 'ram_mb',
  total[2], 'disk_gb', total[3], 'at_ms', at)
return {'OK', v}
