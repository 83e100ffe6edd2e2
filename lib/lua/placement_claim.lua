-- placement_claim: claim capacity on a host for a VM, with the filters' checks and the
-- reservations' rule, in one step.
-- KEYS: 1 the VM's claim, 2 the target host, 3 the host the claim is on now (= target when
--       none), 4 the event stream, 5 the target's reservations, 6 the reservations of the
--       host the claim is on now, 7 the any-host reservations, then pairs (host, its
--       reservations) of every host the caller knows: passed when an any-host reservation
--       may have to be kept free (the pool check below); then, for each network of ARGV[14]
--       in its order, a triple: the network's hash, its addresses (ip -> vm) and the MACs in
--       use (mac -> vm, the same key in every triple); then,
--       with a placement rule (ARGV[17]), the hosts of the VM's request (vm -> host); last,
--       with a fencing epoch (ARGV[19]), the hash of the task placing the VM.
-- ARGV: 1 host id, 2 vcpus, 3 ram_mb, 4 disk_gb, 5 now_ms, 6 host_timeout_ms, 7-9 ram/cpu/
--       disk ratios, 10 the host the caller saw the claim on ('' = no claim), 11 vm id,
--       12 the VM's group, 13 the platform clock's now (lib/clock.h: the events' at_ms; ARGV[5]
--       is real time, which heartbeats' last_seen_ms are compared with), 14 the networks the
--       VM gets an address on, comma-separated ('' or absent: none), 15 the MACs to give it
--       on them (the caller's picks), comma-separated in the same order,
--       16 the most claims the target may hold ('', absent or 0: no limit), 17 the placement
--       rule between the VMs of the request ('affinity', 'anti-affinity'; '' or absent: none),
--       18 the request's id (kept in the claim, so that its release forgets the VM there),
--       19 the epoch the caller holds the task under ('' or absent: not checked).
-- Fencing: with ARGV[19], the claim is taken only while the task's epoch is that one; a
-- call that outlived its hold (an abort or a take-over bumped the epoch, and the new holder
-- may have rolled the placement back already) answers {'STALE'} and writes nothing.
-- VMs per host: the host's `claims` field counts the claims on it (this script moves it with
-- the claim, placement_release.lua takes it down); a claim that would make it exceed ARGV[16]
-- answers {'MAX_VMS', claims}. A placement rule is checked against the other VMs of the
-- request in the request's hosts: affinity wants every one on the target, anti-affinity none;
-- a breach answers {'AFFINITY', 'affinity' | 'anti_affinity'}; the claim records its host
-- there. Both answers write nothing.
-- Addresses: the pool is every address of the network's cidr but the network address, the
-- broadcast and the gateway; the first free one from as far in as the pool is full (wrapping
-- round) is taken, in this step, with the claim: one address and MAC on each network, all
-- or none. A claim that already holds an address on a network keeps it (a retry, a move, a
-- shelved VM placed again). The claim keeps the first network's in its network, ip and mac
-- fields and every one's in networks, ips and macs (comma-separated, in order). Answers
-- {'NO_NETWORK', id} (a network is gone), {'EXHAUSTED', name, size, id} (every address of
-- one is held) or {'MAC'} (a MAC is in use: pick others), writing nothing.
-- Reservations (hash fields <group>:vcpus|ram_mb|disk_gb reserved, <group>:used_* of it held
-- by the group's claims): a group's unclaimed reservation on a host is held there for it. A
-- claim takes from its group's reservation on the host first, then from its group's any-host
-- reservation, then from unreserved capacity, and must leave every other group's unclaimed
-- reservation on the host free: used + want + held - own <= capacity * ratio. Unclaimed
-- any-host reservations must stay coverable: a claim that takes unreserved capacity of a
-- resource while some are unclaimed must leave the sum over UP hosts of max(0, capacity *
-- ratio - used - held) at least the unclaimed any-host total; without the host pairs it
-- answers {'POOL'} and the caller calls again with them.
-- Moving a claim off a host the caller now excludes gives the old host its share (and the
-- reservations their part) back in the same step. Each host whose usage changed gets its
-- version bumped and a host.usage event (with the host's claims count). Returns {'OK',
-- used_vcpus, used_ram_mb, used_disk_gb, ips, macs} of the target (comma-separated in the
-- networks' order; '' without a network), {'CHANGED', host} when the claim moved meanwhile,
-- {'REJECTED', 8 host fields} when the host no longer fits (state, last_seen_ms, cap_* then
-- used_*), {'RESERVED', resource} when only reservations of other groups stand in the way
-- (on the host or, resource prefixed 'any:', the any-host pool), {'POOL'} as said.
-- Cost: the script runs once per placement, so its common path (no reservation, network or
-- rule) is kept to seven commands, eight with the fencing epoch: the claim and the target
-- are read once each, the target's counters are computed here and written in one HSET, and
-- numbers are written as strings made with string.format('%d') (a number handed to
-- redis.call is printed with '%.17g', several times slower).
local R = {'vcpus', 'ram_mb', 'disk_gb'}
local U = {'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local HOST = {'state', 'last_seen_ms', 'cap_vcpus', 'cap_ram_mb', 'cap_disk_gb',
  'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
local ZERO = {0, 0, 0}
local fmt = string.format
local function n(v) return tonumber(v) or 0 end
-- An integer as the text Redis stores ('0' without formatting: most amounts written are).
local function digits(v)
  if v == 0 then return '0' end
  return fmt('%d', v)
end
local now, timeout, group = n(ARGV[5]), n(ARGV[6]), ARGV[12]
local want = {n(ARGV[2]), n(ARGV[3]), n(ARGV[4])}
local ratio = {n(ARGV[8]), n(ARGV[7]), n(ARGV[9])}

-- Unclaimed reservations in a reservation hash: of every group (held) and of group (own).
-- Both are ZERO (shared, never written) when the hash is empty, as it mostly is.
local function holdings(key)
  local t = redis.call('HGETALL', key)
  if #t == 0 then return ZERO, ZERO end
  local rows, held, own = {}, {0, 0, 0}, {0, 0, 0}
  for i = 1, #t, 2 do
    local g, f = string.match(t[i], '^([^:]*):(.+)$')
    if g then rows[g] = rows[g] or {}; rows[g][f] = n(t[i + 1]) end
  end
  for g, r in pairs(rows) do
    for j = 1, 3 do
      local free = (r[R[j]] or 0) - (r[U[j]] or 0)
      if free > 0 then
        held[j] = held[j] + free
        if g == group then own[j] = free end
      end
    end
  end
  return held, own
end

-- Give amounts back to g's used_* in a reservation hash (never below zero); fields of a
-- group with nothing reserved and nothing used there go.
local function give_back(key, g, amounts)
  for j = 1, 3 do
    if amounts[j] > 0 then
      local f = g .. ':' .. U[j]
      if redis.call('HINCRBY', key, f, digits(-amounts[j])) <= 0 then
        if redis.call('HEXISTS', key, g .. ':' .. R[j]) == 1 then
          redis.call('HSET', key, f, 0)
        else
          redis.call('HDEL', key, f)
        end
      end
    end
  end
end

local function usage(key, host, change)
  local u = redis.call('HMGET', key, 'used_vcpus', 'used_ram_mb', 'used_disk_gb', 'claims')
  local v = redis.call('HINCRBY', key, 'version', 1)
  redis.call('XADD', KEYS[4], '*', 'type', 'host.usage',
    'key', key, 'host', host, 'vm', ARGV[11], 'change', change, 'used_vcpus',
    u[1] or '0', 'used_ram_mb', u[2] or '0', 'used_disk_gb', u[3] or '0',
    'claims', u[4] or '0', 'version', v, 'at_ms', ARGV[13])
end

local function up(h) return h[1] == 'UP' and now - n(h[2]) <= timeout end

-- A comma-separated list as a table ('' or absent: empty).
local function split(list)
  local t = {}
  if not list or list == '' then return t end
  for item in string.gmatch(list, '[^,]+') do t[#t + 1] = item end
  return t
end
local nets, want_macs = split(ARGV[14]), split(ARGV[15])
local max_vms = n(ARGV[16])
local rule = ARGV[17] or ''
local fence = ARGV[19] or ''
local npool = #KEYS
local TASK = KEYS[npool]
if fence ~= '' then npool = npool - 1 end
local PEERS = KEYS[npool]
if rule ~= '' then npool = npool - 1 end
npool = npool - 3 * #nets
local function net_keys(i)
  local k = npool + 3 * (i - 1)
  return KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
end
-- What the claim holds already: network -> {ip, mac} (claims from before several networks
-- hold one, in network, ip and mac); filled from the claim's fields (read below, with its
-- host) when the VM gets an address.
local held_by = {}

-- a.b.c.d as a number (nil when it is not one).
local function ip4(text)
  local a, b, c, d = string.match(text or '', '^(%d+)%.(%d+)%.(%d+)%.(%d+)$')
  if not a then return nil end
  return ((tonumber(a) * 256 + tonumber(b)) * 256 + tonumber(c)) * 256 + tonumber(d)
end
local function text4(v)
  return string.format('%d.%d.%d.%d', math.floor(v / 16777216) % 256,
    math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256)
end

-- The address the claim gets on net (its keys NET and ADDRS): the one it holds, or the
-- first free one from as far in as the pool is full. Returns ip, nil or nil, the refusal.
local function address(net, NET, ADDRS)
  local held = held_by[net]
  if held and held[1] ~= '' then return held[1], nil end
  local nd = redis.call('HMGET', NET, 'name', 'cidr', 'gateway')
  if not nd[2] then return nil, {'NO_NETWORK', net} end
  local base_text, prefix = string.match(nd[2], '^([%d.]+)/(%d+)$')
  local base, gw = ip4(base_text), ip4(nd[3])
  prefix = tonumber(prefix)
  if not base or not prefix then return nil, {'NO_NETWORK', net} end
  local span = 2 ^ (32 - prefix)
  local size = span - 2
  if gw and gw > base and gw < base + span - 1 then size = size - 1 end
  local held_n = redis.call('HLEN', ADDRS)
  if held_n >= size then return nil, {'EXHAUSTED', nd[1] or net, size, net} end
  -- The scan starts as many addresses in as are held: addresses are mostly taken from the
  -- bottom up, so a free one is usually found at once, even in a /16 nearly full.
  local n_hosts = span - 2
  for i = 0, n_hosts - 1 do
    local v = base + 1 + (held_n + i) % n_hosts
    if v ~= gw then
      local t = text4(v)
      if redis.call('HEXISTS', ADDRS, t) == 0 then return t, nil end
    end
  end
  return nil, {'EXHAUSTED', nd[1] or net, size, net}
end

if fence ~= '' and redis.call('HGET', TASK, 'epoch') ~= fence then return {'STALE'} end
local c = redis.call('HMGET', KEYS[1], 'host', 'networks', 'ips', 'macs', 'network', 'ip', 'mac')
local cur = c[1] or ''
if cur ~= ARGV[10] then return {'CHANGED', cur} end
if #nets > 0 then
  local hn, hi, hm = split(c[2]), split(c[3]), split(c[4])
  if #hn == 0 and c[5] and c[5] ~= '' then hn, hi, hm = {c[5]}, {c[6] or ''}, {c[7] or ''} end
  for i = 1, #hn do held_by[hn[i]] = {hi[i] or '', hm[i] or ''} end
end
-- The target as HOST lists it, then its claims and version.
local h = redis.call('HMGET', KEYS[2], 'state', 'last_seen_ms', 'cap_vcpus', 'cap_ram_mb',
  'cap_disk_gb', 'used_vcpus', 'used_ram_mb', 'used_disk_gb', 'claims', 'version')
local used, room = {n(h[6]), n(h[7]), n(h[8])}, {}
local ok = up(h)
for j = 1, 3 do
  room[j] = n(h[2 + j]) * ratio[j]
  ok = ok and used[j] + want[j] <= room[j]
end
if not ok then
  local row = {'REJECTED'}
  for j = 1, 8 do row[j + 1] = h[j] or '' end
  return row
end

-- VMs per host: the claim counts on the target unless it is there already.
if max_vms > 0 then
  local count = n(h[9])
  if cur == ARGV[1] then count = count - 1 end
  if count + 1 > max_vms then return {'MAX_VMS', tostring(count)} end
end

-- The request's placement rule, against where its other VMs' claims are.
if rule ~= '' then
  local peers = redis.call('HGETALL', PEERS)
  for i = 1, #peers, 2 do
    if peers[i] ~= ARGV[11] then
      if rule == 'anti-affinity' and peers[i + 1] == ARGV[1] then
        return {'AFFINITY', 'anti_affinity'}
      end
      if rule == 'affinity' and peers[i + 1] ~= ARGV[1] then return {'AFFINITY', 'affinity'} end
    end
  end
end

-- Which reservations the claim takes from: the group's on the host, then its any-host one.
local held, own = holdings(KEYS[5])
local held_any, own_any = holdings(KEYS[7])
-- With no reservation on the host or any host (ZERO both), the claim takes nothing from
-- them and the checks below are the capacity check above: they are skipped.
local on_host, on_any = ZERO, ZERO
if held ~= ZERO or held_any ~= ZERO then
  local rest = {}
  on_host, on_any = {}, {}
  for j = 1, 3 do
    on_host[j] = math.min(want[j], own[j])
    on_any[j] = math.min(want[j] - on_host[j], own_any[j])
    rest[j] = want[j] - on_host[j] - on_any[j]
    if used[j] + want[j] + held[j] - on_host[j] > room[j] then
      return {'RESERVED', R[j]}
    end
  end

  -- The pool check: only for a resource taken from unreserved capacity while other any-host
  -- reservations stay unclaimed.
  local pool = false
  for j = 1, 3 do
    if rest[j] > 0 and held_any[j] - on_any[j] > 0 then pool = true end
  end
  if pool then
    if npool < 8 then return {'POOL'} end
    local free = {0, 0, 0}
    for i = 8, npool - 1, 2 do
      local row = redis.call('HMGET', KEYS[i], unpack(HOST))
      if up(row) then
        local hh = holdings(KEYS[i + 1])
        for j = 1, 3 do
          local f = n(row[2 + j]) * ratio[j] - n(row[5 + j]) - hh[j]
          if KEYS[i] == KEYS[2] then f = f - want[j] + on_host[j] end
          if f > 0 then free[j] = free[j] + f end
        end
      end
    end
    for j = 1, 3 do
      if rest[j] > 0 and free[j] < held_any[j] - on_any[j] then
        return {'RESERVED', 'any:' .. R[j]}
      end
    end
  end
end

-- The addresses, before anything is written: a refusal leaves everything as it was.
local ips, macs, MACS = {}, {}, nil
for i = 1, #nets do
  local NET, ADDRS
  NET, ADDRS, MACS = net_keys(i)
  local ip, why = address(nets[i], NET, ADDRS)
  if not ip then return why end
  local held = held_by[nets[i]]
  local mac = held and held[2] ~= '' and held[2] or want_macs[i] or ''
  if not (held and held[2] ~= '') and (mac == '' or redis.call('HEXISTS', MACS, mac) == 1) then
    return {'MAC'}
  end
  for j = 1, i - 1 do
    if macs[j] == mac then return {'MAC'} end
  end
  ips[i], macs[i] = ip, mac
end

local moved = false
if cur ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  moved = true
  local old = redis.call('HMGET', KEYS[1], 'vcpus', 'ram_mb', 'disk_gb', 'group',
    'res_vcpus', 'res_ram_mb', 'res_disk_gb', 'any_vcpus', 'any_ram_mb', 'any_disk_gb')
  for j = 1, 3 do
    if n(old[j]) > 0 and redis.call('HINCRBY', KEYS[3], U[j], digits(-n(old[j]))) < 0 then
      redis.call('HSET', KEYS[3], U[j], 0) end
  end
  if old[4] then
    give_back(KEYS[6], old[4], {n(old[5]), n(old[6]), n(old[7])})
    give_back(KEYS[7], old[4], {n(old[8]), n(old[9]), n(old[10])})
  end
  if redis.call('HINCRBY', KEYS[3], 'claims', -1) < 0 then
    redis.call('HSET', KEYS[3], 'claims', 0)
  end
  usage(KEYS[3], cur, 'release')
end
-- The target's counters from what was read above (read again when the claim was just
-- released from this same host), written in one step; nothing else writes them meanwhile.
local claims, version = n(h[9]), n(h[10])
if moved and KEYS[3] == KEYS[2] then
  local b = redis.call('HMGET', KEYS[2], 'used_vcpus', 'used_ram_mb', 'used_disk_gb', 'claims',
    'version')
  used, claims, version = {n(b[1]), n(b[2]), n(b[3])}, n(b[4]), n(b[5])
end
local u, ut = {}, {}
for j = 1, 3 do
  u[j] = used[j] + want[j]
  ut[j] = digits(u[j])
  if on_host[j] > 0 then
    redis.call('HINCRBY', KEYS[5], group .. ':' .. U[j], digits(on_host[j]))
  end
  if on_any[j] > 0 then
    redis.call('HINCRBY', KEYS[7], group .. ':' .. U[j], digits(on_any[j]))
  end
end
claims, version = digits(claims + 1), digits(version + 1)
redis.call('HSET', KEYS[2], 'used_vcpus', ut[1], 'used_ram_mb', ut[2], 'used_disk_gb', ut[3],
  'claims', claims, 'version', version)
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'vcpus', ARGV[2], 'ram_mb', ARGV[3],
  'disk_gb', ARGV[4], 'group', group, 'res_vcpus', digits(on_host[1]),
  'res_ram_mb', digits(on_host[2]), 'res_disk_gb', digits(on_host[3]),
  'any_vcpus', digits(on_any[1]), 'any_ram_mb', digits(on_any[2]),
  'any_disk_gb', digits(on_any[3]))
for i = 1, #nets do
  local _, ADDRS = net_keys(i)
  redis.call('HSET', ADDRS, ips[i], ARGV[11])
  redis.call('HSET', MACS, macs[i], ARGV[11])
end
if #nets > 0 then
  redis.call('HSET', KEYS[1], 'network', nets[1], 'ip', ips[1], 'mac', macs[1], 'networks',
    table.concat(nets, ','), 'ips', table.concat(ips, ','), 'macs', table.concat(macs, ','))
end
if rule ~= '' then
  redis.call('HSET', PEERS, ARGV[11], ARGV[1])
  redis.call('HSET', KEYS[1], 'request', ARGV[18] or '')
end
redis.call('XADD', KEYS[4], '*', 'type', 'host.usage', 'key', KEYS[2], 'host', ARGV[1],
  'vm', ARGV[11], 'change', 'claim', 'used_vcpus', ut[1], 'used_ram_mb', ut[2],
  'used_disk_gb', ut[3], 'claims', claims, 'version', version, 'at_ms', ARGV[13])
return {'OK', u[1], u[2], u[3], table.concat(ips, ','), table.concat(macs, ',')}
