-- placement_release: give back exactly what a claim holds (never below zero), and what it
-- took of its group's reservations, bump the host's version with a host.usage event, and
-- delete the claim. With keep_disk, only the vCPUs and RAM go back (to the host and to the
-- reservations) and the claim stays, holding the disk (a shelved VM's).
-- A full release also gives back the claim's network addresses and MACs, one of each per
-- network (placement_claim.lua);
-- keep_disk keeps them (a shelved VM keeps its address), and so does keep_address: the
-- capacity all goes back and the claim stays with none of it, holding the address only (a
-- VM whose build is retried elsewhere, or that ended ERROR, keeps it until its disposal).
-- KEYS: the claim, the host the caller read from it, the event stream, that host's
--       reservations, the any-host reservations; then the addresses (ip -> vm) of each of
--       ARGV[7] networks (those of ARGV[5], in order; absent: one), the MACs in use (mac ->
--       vm), and the hosts of the request the claim names (its `request` field:
--       placement_claim.lua), if it names one: 6, 7 and 8 with one network.
-- A full release takes the host's `claims` count down by one and forgets the VM in its
-- request's hosts; shelving and keep_address keep both (the claim stays on the host).
-- ARGV: that host's id, vm id, now_ms, keep_disk ('1'; absent or '' = release it all), the
--       networks the caller read from the claim (its networks field, else its network; ''
--       or absent: none), keep_address ('1'), the count of address keys (absent: 1).
-- Returns 'RELEASED', 'NONE' (no claim) or 'CHANGED' (the claim is on another host or
-- network now).
local function n(v) return tonumber(v) or 0 end
local c = redis.call('HMGET', KEYS[1], 'host', 'vcpus', 'ram_mb', 'disk_gb', 'group',
  'res_vcpus', 'res_ram_mb', 'res_disk_gb', 'any_vcpus', 'any_ram_mb', 'any_disk_gb',
  'network', 'ip', 'mac', 'request', 'networks', 'ips', 'macs')
if not c[1] then return 'NONE' end
local nets = c[16] or c[12] or ''
if c[1] ~= ARGV[1] or nets ~= (ARGV[5] or '') then return 'CHANGED' end
local n_addrs = tonumber(ARGV[7]) or 1
local MACS, PEERS = KEYS[6 + n_addrs], KEYS[7 + n_addrs]
local keep = ARGV[4] == '1'
local upto = keep and 2 or 3
local bare = not keep and ARGV[6] == '1' and (c[12] or '') ~= ''
local R = {'vcpus', 'ram_mb', 'disk_gb'}
local f = {'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
-- The reservation's used_* of the claim's group goes back too; fields of a group with
-- nothing reserved and nothing used there go.
local function give_back(key, g, first)
  for j = 1, upto do
    local amount = n(c[first + j - 1])
    if amount > 0 then
      local field = g .. ':' .. f[j]
      if redis.call('HINCRBY', key, field, -amount) <= 0 then
        if redis.call('HEXISTS', key, g .. ':' .. R[j]) == 1 then
          redis.call('HSET', key, field, 0)
        else
          redis.call('HDEL', key, field)
        end
      end
    end
  end
end
if c[5] then
  give_back(KEYS[4], c[5], 6)
  give_back(KEYS[5], c[5], 9)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  for j = 1, upto do
    local v = c[j + 1]
    if v and (tonumber(v) or 0) > 0
       and redis.call('HINCRBY', KEYS[2], f[j], '-' .. v) < 0 then
      redis.call('HSET', KEYS[2], f[j], 0) end
  end
  if not keep and not bare and redis.call('HINCRBY', KEYS[2], 'claims', -1) < 0 then
    redis.call('HSET', KEYS[2], 'claims', 0)
  end
  local u = redis.call('HMGET', KEYS[2], f[1], f[2], f[3], 'claims')
  local v = redis.call('HINCRBY', KEYS[2], 'version', 1)
  redis.call('XADD', KEYS[3], '*', 'type',
    'host.usage', 'key', KEYS[2], 'host', ARGV[1], 'vm', ARGV[2], 'change',
    keep and 'shrink' or 'release', 'used_vcpus', u[1] or '0', 'used_ram_mb', u[2] or '0',
    'used_disk_gb', u[3] or '0', 'claims', u[4] or '0', 'version', v, 'at_ms', ARGV[3])
end
if keep then
  redis.call('HSET', KEYS[1], 'vcpus', 0, 'ram_mb', 0)
  if c[5] then
    redis.call('HSET', KEYS[1], 'res_vcpus', 0, 'res_ram_mb', 0, 'any_vcpus', 0, 'any_ram_mb', 0)
  end
elseif bare then
  redis.call('HSET', KEYS[1], 'vcpus', 0, 'ram_mb', 0, 'disk_gb', 0, 'res_vcpus', 0,
    'res_ram_mb', 0, 'res_disk_gb', 0, 'any_vcpus', 0, 'any_ram_mb', 0, 'any_disk_gb', 0)
else
  -- The addresses and MACs go back only if they are still this VM's.
  if c[12] and c[12] ~= '' and MACS then
    local ips, macs = {c[13]}, {c[14]}
    if c[16] then
      ips, macs = {}, {}
      for v in string.gmatch(c[17] or '', '[^,]+') do ips[#ips + 1] = v end
      for v in string.gmatch(c[18] or '', '[^,]+') do macs[#macs + 1] = v end
    end
    for i = 1, n_addrs do
      if ips[i] and redis.call('HGET', KEYS[5 + i], ips[i]) == ARGV[2] then
        redis.call('HDEL', KEYS[5 + i], ips[i])
      end
      if macs[i] and redis.call('HGET', MACS, macs[i]) == ARGV[2] then
        redis.call('HDEL', MACS, macs[i])
      end
    end
  end
  if c[15] and c[15] ~= '' and PEERS then redis.call('HDEL', PEERS, ARGV[2]) end
  redis.call('DEL', KEYS[1])
end
return 'RELEASED'
