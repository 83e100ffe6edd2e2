-- hash_rows: many hashes read in one step (hosts for placement and listings, registry
-- instances).
-- retry: safe (reads only)
-- KEYS: the hashes. ARGV: the fields to read (HMGET, missing fields as ''), or none for every
-- field (HGETALL). Returns one row per key, in KEYS order; a missing hash gives an empty row.
local out = {}
for i, key in ipairs(KEYS) do
  if #ARGV == 0 then
    out[i] = redis.call('HGETALL', key)
  elseif redis.call('EXISTS', key) == 0 then
    out[i] = {}
  else
    local row = redis.call('HMGET', key, unpack(ARGV))
    for j = 1, #ARGV do row[j] = row[j] or '' end
    out[i] = row
  end
end
return out
