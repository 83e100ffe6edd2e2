-- usage_apply: apply vm.state and vm.power events to their VMs' usage hashes and XACK each,
-- in one step (services/meter/usage.c explains the event list and the intervals derived from
-- it). The meter hands over every such event of one read at once: one round trip per batch.
-- retry: safe (an event already in the list is acknowledged and ignored)
-- KEYS: event stream, index zset, then the usage hash of each event (in event order).
-- ARGV: group, max_events, billing, then per event: id, vm, state, power, at_ms, owner,
--       template, host, vcpus, ram_mb, disk_gb. A vm.state event has its lifecycle state and
--       power ""; a vm.power event its power state and state "". Empty metadata means "not in
--       the event". billing is the lifecycle table's billing (lib/lifecycle.h,
--       lifecycle_billing) as JSON: {"bill": {state: {power or "" (any): code}}, "keep":
--       {power: true}}; a code has bit 0 compute (vCPU and RAM hours), bit 1 disk. A "keep"
--       power (UNKNOWN: the host stopped reporting) changes nothing: the last known power
--       bills. Each event's bill is that of the (state, power) pair in force after it, the
--       two followed along the VM's event list. Events stored before power was followed
--       ({id, code, at}) keep their code. Compute time is kept in `intervals`, disk time in
--       `disk_intervals`.
-- Returns one integer per event, in order: 1 applied, 0 seen. Events are applied in order,
-- so two events of one VM in a batch see each other.
local stream, index = KEYS[1], KEYS[2]
local group, max_events = ARGV[1], tonumber(ARGV[2])
local billing = cjson.decode(ARGV[3])
local NARGS = 11
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
-- The code of (state, power): the power's row, else the state's any row, else nothing.
local function code(st, pw)
  local rows = st and billing.bill[st]
  if not rows then return 0 end
  return (pw and rows[pw]) or rows[''] or 0
end
-- Each event's bill in list, following state and power from cur = {state, power, legacy
-- code}; cur is updated to what holds after the last event.
local function follow(list, cur)
  local out = {}
  for i, e in ipairs(list) do
    if e[4] == nil then
      cur.st, cur.pw, cur.lc = nil, nil, e[2]
      out[i] = e[2]
    else
      if e[4] ~= '' then cur.st, cur.lc = e[4], nil end
      if e[5] ~= '' and not billing.keep[e[5]] then cur.pw = e[5] end
      if cur.st == nil and cur.lc then out[i] = cur.lc else out[i] = code(cur.st, cur.pw) end
    end
  end
  return out
end
local function apply(key, o)
  local id, vm, state, power = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4]
  local at = tonumber(ARGV[o + 5])
  local h = redis.call('HMGET', key, 'events', 'last_event', 'base', 'base_open',
                       'base_until', 'base_disk', 'base_disk_open', 'base_follow')
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
  table.insert(events, pos, {id, -1, at, state, power})
  local newest = pos == #events
  local base = h[3] and cjson.decode(h[3]) or {}
  local base_open = tonumber(h[4] or '')
  local base_disk = h[6] and cjson.decode(h[6]) or {}
  local base_disk_open = tonumber(h[7] or '')
  local base_follow = h[8] and cjson.decode(h[8]) or {}
  local cur = {st = base_follow[1], pw = base_follow[2], lc = base_follow[3]}
  if cur.st == '' then cur.st = nil end
  if cur.pw == '' then cur.pw = nil end
  if cur.lc == -1 then cur.lc = nil end
  local function derive(list, codes, open, prev, out, bills)
    for i, e in ipairs(list) do
      if bills(codes[i]) then
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
      if quote_first and v[4] ~= nil then
        parts[i] = string.format('["%s",%d,%d,"%s","%s"]', v[1], v[2], v[3], v[4], v[5])
      elseif quote_first then
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
    local head_codes = follow(head, cur)
    base_open = derive(head, head_codes, base_open, prev_end(base), base, compute)
    base_disk_open = derive(head, head_codes, base_disk_open, prev_end(base_disk), base_disk,
                            disk)
    set[#set + 1] = 'base_follow'
    set[#set + 1] = string.format('["%s","%s",%d]', cur.st or '', cur.pw or '', cur.lc or -1)
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
  local codes = follow(events, cur)
  local open = derive(events, codes, base_open, prev_end(base), intervals, compute)
  if open then intervals[#intervals + 1] = {open, 0} end
  local disk_intervals = {}
  for i, v in ipairs(base_disk) do disk_intervals[i] = v end
  local disk_open = derive(events, codes, base_disk_open, prev_end(base_disk), disk_intervals,
                           disk)
  if disk_open then disk_intervals[#disk_intervals + 1] = {disk_open, 0} end
  set[#set + 1] = 'vm'; set[#set + 1] = vm
  set[#set + 1] = 'events'; set[#set + 1] = encode(events, true)
  set[#set + 1] = 'intervals'; set[#set + 1] = encode(intervals, false)
  set[#set + 1] = 'disk_intervals'; set[#set + 1] = encode(disk_intervals, false)
  if newest then set[#set + 1] = 'last_event'; set[#set + 1] = id end
  local meta = {'owner', 'template', 'host', 'vcpus', 'ram_mb', 'disk_gb'}
  for i, field in ipairs(meta) do
    local value = ARGV[o + 5 + i]
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
if #ARGV ~= 3 + NARGS * (#KEYS - 2) then
  return {err = 'BADARGS ' .. #KEYS .. ' keys, ' .. #ARGV .. ' arguments'}
end
local out = {}
for e = 1, #KEYS - 2 do
  out[e] = apply(KEYS[2 + e], 3 + (e - 1) * NARGS)
end
return out
