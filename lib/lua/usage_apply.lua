-- usage_apply: apply vm.state events to their VMs' usage hashes and XACK each, in one step
-- (services/meter/usage.c explains the event list and the intervals derived from it). The
-- meter hands over every vm.state event of one read at once: one round trip per batch.
-- retry: safe (an event already in the list is acknowledged and ignored)
-- KEYS: event stream, index zset, then the usage hash of each event (in event order).
-- ARGV: group, max_events, then per event: id, vm, state, at_ms, owner, template, host,
--       vcpus, ram_mb, disk_gb. Empty metadata means "not in the event".
-- Returns one integer per event, in order: 1 applied, 0 seen. Events are applied in order,
-- so two events of one VM in a batch see each other.
local stream, index = KEYS[1], KEYS[2]
local group, max_events = ARGV[1], tonumber(ARGV[2])
local function sid(s)
  local a, b = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
local function less(a, b)
  local am, as = sid(a)
  local bm, bs = sid(b)
  return am < bm or (am == bm and as < bs)
end
local function apply(key, o)
  local id, vm, state, at = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], tonumber(ARGV[o + 4])
  local h = redis.call('HMGET', key, 'events', 'last_event', 'base', 'base_open',
                       'base_until')
  if h[5] and not less(h[5], id) then
    redis.call('XACK', stream, group, id)
    return 0
  end
  local events = h[1] and cjson.decode(h[1]) or {}
  local last = h[2]
  local pos = #events + 1
  if last and not less(last, id) then
    for i = 1, #events do
      if events[i][1] == id then
        redis.call('XACK', stream, group, id)
        return 0
      end
      if less(id, events[i][1]) then pos = i break end
    end
  end
  table.insert(events, pos, {id, state == 'ACTIVE' and 1 or 0, at})
  local newest = pos == #events
  local base = h[3] and cjson.decode(h[3]) or {}
  local base_open = tonumber(h[4] or '')
  local function derive(list, open, prev, out)
    for _, e in ipairs(list) do
      if e[2] == 1 then
        if not open then open = math.max(e[3], prev) end
      elseif open then
        local stop = math.max(e[3], open)
        out[#out + 1] = {open, stop}
        prev, open = stop, nil
      end
    end
    return open, prev
  end
  local function prev_end(list)
    if #list > 0 then return list[#list][2] end
    return 0
  end
  local function encode(list, quote_first)
    local parts = {}
    for i, v in ipairs(list) do
      if quote_first then
        parts[i] = string.format('["%s",%d,%d]', v[1], v[2], v[3])
      else
        parts[i] = string.format('[%d,%d]', v[1], v[2])
      end
    end
    return '[' .. table.concat(parts, ',') .. ']'
  end
  local set = {}
  if #events > max_events then
    local cut = #events - math.floor(max_events / 2)
    local head, rest = {}, {}
    for i, e in ipairs(events) do
      if i <= cut then head[#head + 1] = e else rest[#rest + 1] = e end
    end
    base_open = derive(head, base_open, prev_end(base), base)
    events = rest
    set[#set + 1] = 'base'; set[#set + 1] = encode(base, false)
    set[#set + 1] = 'base_open'
    set[#set + 1] = base_open and string.format('%d', base_open) or ''
    set[#set + 1] = 'base_until'; set[#set + 1] = head[#head][1]
  end
  local intervals = {}
  for i, v in ipairs(base) do intervals[i] = v end
  local open = derive(events, base_open, prev_end(base), intervals)
  if open then intervals[#intervals + 1] = {open, 0} end
  set[#set + 1] = 'vm'; set[#set + 1] = vm
  set[#set + 1] = 'events'; set[#set + 1] = encode(events, true)
  set[#set + 1] = 'intervals'; set[#set + 1] = encode(intervals, false)
  if newest then set[#set + 1] = 'last_event'; set[#set + 1] = id end
  local meta = {'owner', 'template', 'host', 'vcpus', 'ram_mb', 'disk_gb'}
  for i, field in ipairs(meta) do
    local value = ARGV[o + 4 + i]
    if value ~= '' then
      if newest then
        set[#set + 1] = field; set[#set + 1] = value
      else
        redis.call('HSETNX', key, field, value)
      end
    end
  end
  if #intervals > 0 then
    set[#set + 1] = 'first_ms'
    set[#set + 1] = string.format('%d', intervals[1][1])
    local score = '+inf'
    if not open then score = string.format('%d', intervals[#intervals][2]) end
    redis.call('ZADD', index, score, vm)
  end
  redis.call('HSET', key, unpack(set))
  redis.call('XACK', stream, group, id)
  return 1
end
if #ARGV ~= 2 + 10 * (#KEYS - 2) then
  return {err = 'BADARGS ' .. #KEYS .. ' keys, ' .. #ARGV .. ' arguments'}
end
local out = {}
for e = 1, #KEYS - 2 do
  out[e] = apply(KEYS[2 + e], 2 + (e - 1) * 10)
end
return out
