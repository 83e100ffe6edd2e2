-- audit_append: append a batch of audit records to the audit stream (lib/audit.c) and apply
-- its retention (exact, so a small cap holds to the entry), in one round trip: the gateway's
-- audit writer sends what queued up meanwhile.
-- KEYS[1]: the audit stream.
-- ARGV[1]: most entries kept (XADD MAXLEN, exact; 0 = no cap)
-- ARGV[2]: oldest entry kept, unix ms (XTRIM MINID, exact; 0 = no age limit)
-- ARGV[3..]: records, 8 values each: at_ms actor action target group source request_id result
-- An empty batch only trims. Returns the number of records appended.
local max, min = tonumber(ARGV[1]), tonumber(ARGV[2])
local names = {'at_ms', 'actor', 'action', 'target', 'group', 'source', 'request_id', 'result'}
local n = 0
for i = 3, #ARGV - 7, 8 do
  local x = {}
  if max > 0 then x = {'MAXLEN', max} end
  x[#x + 1] = '*'
  for f = 1, 8 do
    x[#x + 1] = names[f]; x[#x + 1] = ARGV[i + f - 1]
  end
  redis.call('XADD', KEYS[1], unpack(x))
  n = n + 1
end
if max > 0 and n == 0 then redis.call('XTRIM', KEYS[1], 'MAXLEN', max) end
if min > 0 then redis.call('XTRIM', KEYS[1], 'MINID', min) end
return n
