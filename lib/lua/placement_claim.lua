-- placement_claim: claim capacity on a host for a VM, with the filters' checks, in one step.
-- KEYS: the VM's claim, the target host, the host the claim is on now (= target when none),
--       the event stream.
-- ARGV: host id, vcpus, ram_mb, disk_gb, now_ms, host_timeout_ms, ram/cpu/disk ratios, the
--       host the caller saw the claim on ('' = no claim), vm id.
-- Moving a claim off a host the caller now excludes gives the old host its share back in
-- the same step. Each host whose usage changed gets its version bumped and a host.usage
-- event. Returns {'OK', used_vcpus, used_ram_mb, used_disk_gb} of the target, {'CHANGED',
-- host} when the claim moved meanwhile, {'REJECTED', 8 host fields} when the host no longer
-- fits (state, last_seen_ms, cap_* then used_*).
local function usage(key, host, change)
  local u = redis.call('HMGET', key, 'used_vcpus', 'used_ram_mb', 'used_disk_gb')
  local v = redis.call('HINCRBY', key, 'version', 1)
  redis.call('XADD', KEYS[4], '*', 'type', 'host.usage',
    'key', key, 'host', host, 'vm', ARGV[11], 'change', change, 'used_vcpus',
    u[1] or '0', 'used_ram_mb', u[2] or '0', 'used_disk_gb', u[3] or '0',
    'version', v, 'at_ms', ARGV[5])
end
local cur = redis.call('HGET', KEYS[1], 'host') or ''
if cur ~= ARGV[10] then return {'CHANGED', cur} end
local h = redis.call('HMGET', KEYS[2], 'state', 'last_seen_ms', 'cap_vcpus',
  'cap_ram_mb', 'cap_disk_gb', 'used_vcpus', 'used_ram_mb', 'used_disk_gb')
local function n(v) return tonumber(v) or 0 end
local ok = h[1] == 'UP' and n(ARGV[5]) - n(h[2]) <= n(ARGV[6])
  and n(h[7]) + n(ARGV[3]) <= n(h[4]) * n(ARGV[7])
  and n(h[6]) + n(ARGV[2]) <= n(h[3]) * n(ARGV[8])
  and n(h[8]) + n(ARGV[4]) <= n(h[5]) * n(ARGV[9])
if not ok then
  local row = {'REJECTED'}
  for j = 1, 8 do row[j + 1] = h[j] or '' end
  return row
end
local f = {'used_vcpus', 'used_ram_mb', 'used_disk_gb'}
if cur ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  local old = redis.call('HMGET', KEYS[1], 'vcpus', 'ram_mb', 'disk_gb')
  for j = 1, 3 do
    if n(old[j]) > 0 and redis.call('HINCRBY', KEYS[3], f[j], '-' .. old[j]) < 0 then
      redis.call('HSET', KEYS[3], f[j], 0) end
  end
  usage(KEYS[3], cur, 'release')
end
local u = {}
for j = 1, 3 do u[j] = redis.call('HINCRBY', KEYS[2], f[j], ARGV[j + 1]) end
redis.call('HSET', KEYS[1], 'host', ARGV[1], 'vcpus', ARGV[2], 'ram_mb', ARGV[3],
  'disk_gb', ARGV[4])
usage(KEYS[2], ARGV[1], 'claim')
return {'OK', u[1], u[2], u[3]}
