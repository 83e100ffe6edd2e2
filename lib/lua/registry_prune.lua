-- registry_prune: drop the instances whose registration lapsed (Redis time) and list the rest.
-- retry: safe (pruning twice prunes nothing more)
-- KEYS: service zsets (member = instance, score = expiry in ms).
-- Returns, per key, the live instances sorted by name.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, zkey in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  local insts = redis.call('ZRANGE', zkey, 0, -1)
  table.sort(insts)
  out[i] = insts
end
return out
