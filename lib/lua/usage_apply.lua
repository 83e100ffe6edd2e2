-- usage_apply: apply vm.state events to their VMs' usage hashes and XACK each, in one step
-- (services/meter/usage.c explains the event list and the intervals derived from it). The
-- meter hands over every vm.state event of one read at once: one round trip per batch.
-- retry: safe (an event already in the list is acknowledged and ignored)
-- KEYS: event stream, index zset, then the usage hash of each event (in event order).
-- ARGV: group, max_events, then per event: id, vm, billing, at_ms, owner, template, host,
--       vcpus, ram_mb, disk_gb. Empty metadata means "not in the event". billing is what the
--       VM's new state bills (lib/lifecycle.h, lifecycle_billing): bit 0 compute (vCPU and RAM
--       hours), bit 1 disk; 0 nothing. The single value 1, stored before disk-only billing
--       existed, bills both. Compute time is kept in `intervals`, disk time in
--       `disk_intervals`.
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
local function compute(c) return c % 2 == 1 end
local function disk(c) return c >= 1 end
local function apply(key, o)
  local id, vm, bill, at = ARGV[o + 1], ARGV[o + 2], tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
  local h = redis.call('HMGET', key, 'events', 'last_event', 'base', 'base_open',
                       'base_until', 'base_disk', 'base_disk_open')
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
  table.insert(events, pos, {id, bill, at})
  local newest = pos == #events
  local base = h[3] and cjson.decode(h[3]) or {}
  local base_open = tonumber(h[4] or '')
  local base_disk = h[6] and cjson.decode(h[6]) or {}
  local base_disk_open = tonumber(h[7] or '')
  local function derive(list, open, prev, out, bills)
    for _, e in ipairs(list) do
      if bills(e[2]) then
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
    base_open = derive(head, base_open, prev_end(base), base, compute)
    base_disk_open = derive(head, base_disk_open, prev_end(base_disk), base_disk, disk)
    events = rest
    set[#set + 1] = 'base'; set[#set + 1] = encode(base, false)
    set[#set + 1] = 'base_open'
    set[#set + 1] = base_open and string.format('%d', base_open) or ''
    set[#set + 1] = 'base_disk'; set[#set + 1] = encode(base_disk, false)
    set[#set + 1] = 'base_disk_open'
    set[#set + 1] = base_disk_open and string.format('%d', base_disk_open) or ''
    set[#set + 1] = 'base_until'; set[#set + 1] = head[#head][1]
  end
  local intervals = {}
  for i, v in ipairs(base) do intervals[i] = v end
  local open = derive(events, base_open, prev_end(base), intervals, compute)
  if open then intervals[#intervals + 1] = {open, 0} end
  local disk_intervals = {}
  for i, v in ipairs(base_disk) do disk_intervals[i] = v end
  local disk_open = derive(events, base_disk_open, prev_end(base_disk), disk_intervals, disk)
  if disk_open then disk_intervals[#disk_intervals + 1] = {disk_open, 0} end
  set[#set + 1] = 'vm'; set[#set + 1] = vm
  set[#set + 1] = 'events'; set[#set + 1] = encode(events, true)
  set[#set + 1] = 'intervals'; set[#set + 1] = encode(intervals, false)
  set[#set + 1] = 'disk_intervals'; set[#set + 1] = encode(disk_intervals, false)
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
  -- Disk time covers compute time (every state that bills compute bills disk), so the disk
  -- intervals give the first and last moment billed.
  local billed = disk_intervals
  if #billed == 0 then billed = intervals end
  if #billed > 0 then
    set[#set + 1] = 'first_ms'
    set[#set + 1] = string.format('%d', billed[1][1])
    local score = '+inf'
    if billed[#billed][2] ~= 0 then score = string.format('%d', billed[#billed][2]) end
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
