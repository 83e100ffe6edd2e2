-- events_trim: trim the event stream only below what every consumer group has acknowledged:
-- a group's position is its oldest pending entry (read, not yet acknowledged: kept), or the
-- last entry delivered to it when nothing is pending. The stream keeps every entry from the
-- lowest position of all groups on; with no group (no consumer has started yet) nothing
-- is trimmed, so no consumer ever misses an event it has not processed.
-- Entries newer than ARGV[1] (an entry id, e.g. "<now - events_keep_s>-0"; empty or absent:
-- no such floor) are kept as well, so a live-event client reconnecting with Last-Event-ID
-- within that window finds the history after its cursor (gateway/events.c).
-- KEYS[1]: the event stream. Returns the number of entries trimmed.
-- retry: safe
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local low
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local pos = f['last-delivered-id']
  if tonumber(f['pending']) > 0 then
    pos = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  if not low or less(pos, low) then low = pos end
end
if not low or low == '0-0' then return 0 end
local floor = ARGV[1]
if floor and floor ~= '' and less(floor, low) then low = floor end
return redis.call('XTRIM', KEYS[1], 'MINID', low)
