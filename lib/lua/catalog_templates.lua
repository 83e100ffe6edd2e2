-- catalog_templates: every template hash in one step, only while the index still lists the
-- ids the caller expects (gateway/catalog.c keeps the ids each worker thread last read).
-- retry: safe (reads only)
-- KEYS: the template index (a zset of ids), then each template's hash.
-- ARGV: the ids those hashes stand for, in index order.
-- Returns the HGETALL of each hash, or 0 when the index lists other ids now.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
if #ids ~= #KEYS - 1 then return 0 end
for i, id in ipairs(ids) do
  if ARGV[i] ~= id then return 0 end
end
local out = {}
for i = 2, #KEYS do out[i - 1] = redis.call('HGETALL', KEYS[i]) end
return out
