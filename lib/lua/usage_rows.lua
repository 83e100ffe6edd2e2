-- usage_rows: the usage rows of a chunk of VMs that belong to owner (ARGV[1], '' = anyone)
-- and were ACTIVE before ARGV[2].
-- retry: safe (reads only)
-- KEYS: usage hashes. Each row: vm owner template host vcpus ram_mb disk_gb intervals
-- disk_intervals ('' when the hash predates disk-only billing: its intervals bill disk too).
local out = {}
local to = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  local h = redis.call('HMGET', key, 'vm', 'owner', 'template', 'host', 'vcpus',
                       'ram_mb', 'disk_gb', 'intervals', 'first_ms', 'disk_intervals')
  if h[1] and h[8] and (ARGV[1] == '' or h[2] == ARGV[1])
     and tonumber(h[9] or '0') < to then
    for i = 1, 8 do h[i] = h[i] or '' end
    h[9] = h[10] or ''
    h[10] = nil
    out[#out + 1] = h
  end
end
return out
