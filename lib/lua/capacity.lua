-- capacity: what the hosts could give one group's VMs now, read in one step.
-- KEYS: 1 the any-host reservations, then pairs (host, its reservations) of every host.
-- ARGV: 1 the group, 2 now_ms, 3 host_timeout_ms, 4-6 ram/cpu/disk ratios.
-- A host takes placements while UP and reporting (the claim's rule, placement_claim.lua).
-- On such a host the group may use capacity * ratio - used, less every other group's
-- unclaimed reservation there (its own unclaimed reservation is free for it); the sum over
-- the hosts is then less the other groups' unclaimed any-host reservations, which the claim
-- keeps coverable. Returns {hosts, free vcpus, ram_mb, disk_gb, then the same three of the
-- host with the most RAM free for the group (the largest VM it could place now)}.
local R = {'vcpus', 'ram_mb', 'disk_gb'}
local U = {'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local HOST = {'state', 'last_seen_ms', 'cap_vcpus', 'cap_ram_mb', 'cap_disk_gb',
  'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local function n(v) return tonumber(v) or 0 end
local group, now, timeout = ARGV[1], n(ARGV[2]), n(ARGV[3])
local ratio = {n(ARGV[5]), n(ARGV[4]), n(ARGV[6])}

-- Other groups' unclaimed reservations in a reservation hash.
local function others(key)
  local rows, held = {}, {0, 0, 0}
  local t = redis.call('HGETALL', key)
  for i = 1, #t, 2 do
    local g, f = string.match(t[i], '^([^:]*):(.+)$')
    if g and g ~= group then rows[g] = rows[g] or {}; rows[g][f] = n(t[i + 1]) end
  end
  for _, r in pairs(rows) do
    for j = 1, 3 do held[j] = held[j] + math.max(0, (r[R[j]] or 0) - (r[U[j]] or 0)) end
  end
  return held
end

local hosts, free, largest = 0, {0, 0, 0}, {0, 0, 0}
for i = 2, #KEYS - 1, 2 do
  local h = redis.call('HMGET', KEYS[i], unpack(HOST))
  if h[1] == 'UP' and now - n(h[2]) <= timeout then
    hosts = hosts + 1
    local held, f = others(KEYS[i + 1]), {}
    for j = 1, 3 do
      f[j] = math.max(0, math.floor(n(h[2 + j]) * ratio[j] - n(h[5 + j]) - held[j]))
      free[j] = free[j] + f[j]
    end
    if f[2] > largest[2] or (f[2] == largest[2] and f[1] > largest[1]) then largest = f end
  end
end
local any = others(KEYS[1])
for j = 1, 3 do free[j] = math.max(0, free[j] - any[j]) end
return {hosts, free[1], free[2], free[3], largest[1], largest[2], largest[3]}
