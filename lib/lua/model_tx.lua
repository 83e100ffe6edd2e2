-- model_tx: the checks, writes, transitions and events of one transaction (lib/model.c), in
-- one step.
-- KEYS: every key the transaction touches; KEYS[1] is the event stream.
-- ARGV: a flat list of operations, an opcode then its arguments; k is an index into KEYS.
--   C k field expected      check that HGET k field == expected ('' = field or key absent)
--   N k max                 check that k (a hash, set or sorted set; absent = empty) holds
--                           fewer than max entries
--   P k n f1 v1 .. fn vn    HSET k with n field/value pairs
--   D k                     DEL k
--   Z k score member        ZADD k
--   R k member              ZREM k
--   S k member              SADD k
--   M k member              SREM k
--   E n f1 v1 .. fn vn      XADD an event with n field/value pairs to KEYS[1]
--   A k actor request_id    each transition applied is also an audit record (lib/audit.h)
--                           in the audit stream k, made by actor: the audit trail gets it
--                           in the same step as the change
--   Q k scope n f1 lim1 amt1 .. fn limn amtn
--                           charge: HINCRBY k fi amti, refused (QUOTA scope fi lim used amt,
--                           nothing written) when a lim > 0 would be passed (one Q per key:
--                           each is checked against what k held before the transaction); a
--                           negative amount gives back (a VM shelved) and never below 0
--   U v g u                 release: the 4 amounts in v's quota_held (vms vcpus ram_mb
--                           disk_gb) come off g and u (never below 0) and quota_held goes,
--                           so a VM releases once; a VM without quota_held releases nothing
--   T k field from to version at_ms guard_field guard_value n f1 v1 .. fn vn
--                           a transition (lib/lifecycle.h, model_tx_transition): field goes
--                           from -> to. from '*' = observed (applied only when it changes,
--                           the key exists and guard_field, if any, holds guard_value);
--                           version '*' = unchecked, '' = absent. Applied after the other
--                           writes: field, version + 1, updated_ms, then its event (the n
--                           pairs plus from and version).
--   G c h a host group      a claim (placement_claim.lua) placed in no group takes group:
--                           checked that c is on host and in no group; then what it holds
--                           comes out of group's reservations by the claim script's rule
--                           (its unclaimed reservation in h, the host's reservations,
--                           first, then in a, the any-host ones; the rest stays
--                           unreserved): their <group>:used_* and the claim's group, res_*
--                           and any_* fields say so, as if the claim had been made in group
--                           (a pool VM handed out: services/approval/pool.h). The host's
--                           used_* do not change.
-- Every check (and every key index) is verified before any write; a failed check names
-- itself in the CONFLICT error and nothing is written. Returns 1.
local a, n = ARGV, #ARGV
local function key(i)
  local k = KEYS[tonumber(a[i])]
  if not k then error('BADKEY ' .. tostring(a[i])) end
  return k
end
local t = {}
local audit, actor, rid
local i = 1
while i <= n do
  local op = a[i]
  if op == 'T' then
    local k, f, from, to, g = key(i + 1), a[i + 2], a[i + 3], a[i + 4], a[i + 7]
    local h = redis.call('HMGET', k, f, 'version', g ~= '' and g or f)
    local cur, v = h[1] or '', h[2] or ''
    if from ~= '*' then
      if cur ~= from then
        return {err = 'CONFLICT ' .. k .. ' ' .. f .. ' is ' .. cur}
      end
      if a[i + 5] ~= '*' and v ~= a[i + 5] then
        return {err = 'CONFLICT ' .. k .. ' version is ' .. v}
      end
      t[#t + 1] = {i, (tonumber(v) or 0) + 1, cur}
    elseif cur ~= to and (g == '' or h[3] == a[i + 8]) and redis.call('EXISTS', k) == 1 then
      t[#t + 1] = {i, (tonumber(v) or 0) + 1, cur}
    end
    i = i + 10 + 2 * tonumber(a[i + 9])
  elseif op == 'Q' then
    local k, cnt = key(i + 1), tonumber(a[i + 3])
    for x = i + 4, i + 1 + 3 * cnt, 3 do
      local lim, amt = tonumber(a[x + 1]), tonumber(a[x + 2])
      local used = tonumber(redis.call('HGET', k, a[x]) or '0') or 0
      if lim > 0 and used + amt > lim then
        return {err = 'QUOTA ' .. a[i + 2] .. ' ' .. a[x] .. ' ' .. lim .. ' ' .. used .. ' ' .. amt}
      end
    end
    i = i + 4 + 3 * cnt
  elseif op == 'U' then key(i + 1); key(i + 2); key(i + 3); i = i + 4
  elseif op == 'G' then
    local k = key(i + 1)
    key(i + 2); key(i + 3)
    local c = redis.call('HMGET', k, 'host', 'group')
    if (c[1] or '') ~= a[i + 4] then
      return {err = 'CONFLICT ' .. k .. ' host is ' .. (c[1] or '')}
    end
    if (c[2] or '') ~= '' then return {err = 'CONFLICT ' .. k .. ' group is ' .. c[2]} end
    i = i + 6
  elseif op == 'C' then
    local k = key(i + 1)
    local cur = redis.call('HGET', k, a[i + 2]) or ''
    if cur ~= a[i + 3] then
      return {err = 'CONFLICT ' .. k .. ' ' .. a[i + 2] .. ' is ' .. cur}
    end
    i = i + 4
  elseif op == 'N' then
    local k = key(i + 1)
    local kind, size = redis.call('TYPE', k).ok, 0
    if kind == 'zset' then size = redis.call('ZCARD', k)
    elseif kind == 'set' then size = redis.call('SCARD', k)
    elseif kind == 'hash' then size = redis.call('HLEN', k)
    elseif kind ~= 'none' then return {err = 'CONFLICT ' .. k .. ' is a ' .. kind} end
    if size >= tonumber(a[i + 2]) then
      return {err = 'CONFLICT ' .. k .. ' holds ' .. size}
    end
    i = i + 3
  elseif op == 'P' then key(i + 1); i = i + 3 + 2 * tonumber(a[i + 2])
  elseif op == 'A' then audit, actor, rid = key(i + 1), a[i + 2], a[i + 3]; i = i + 4
  elseif op == 'E' then i = i + 2 + 2 * tonumber(a[i + 1])
  elseif op == 'Z' then key(i + 1); i = i + 4
  elseif op == 'D' then key(i + 1); i = i + 2
  elseif op == 'R' or op == 'S' or op == 'M' then key(i + 1); i = i + 3
  else return {err = 'BADOP ' .. tostring(op)} end
end
i = 1
while i <= n do
  local op = a[i]
  if op == 'C' or op == 'A' then i = i + 4
  elseif op == 'G' then
    local k, g = key(i + 1), a[i + 5]
    local R = {'vcpus', 'ram_mb', 'disk_gb'}
    local c = redis.call('HMGET', k, R[1], R[2], R[3])
    local left, took = {}, {}
    for j = 1, 3 do left[j] = tonumber(c[j]) or 0 end
    for x = 1, 2 do
      local res = key(i + 1 + x)
      local h = redis.call('HMGET', res, g .. ':vcpus', g .. ':ram_mb', g .. ':disk_gb',
        g .. ':used_vcpus', g .. ':used_ram_mb', g .. ':used_disk_gb')
      took[x] = {}
      for j = 1, 3 do
        local free = (tonumber(h[j]) or 0) - (tonumber(h[j + 3]) or 0)
        local part = math.max(0, math.min(left[j], free))
        took[x][j], left[j] = part, left[j] - part
        if part > 0 then redis.call('HINCRBY', res, g .. ':used_' .. R[j], part) end
      end
    end
    redis.call('HSET', k, 'group', g, 'res_vcpus', took[1][1], 'res_ram_mb', took[1][2],
      'res_disk_gb', took[1][3], 'any_vcpus', took[2][1], 'any_ram_mb', took[2][2],
      'any_disk_gb', took[2][3])
    i = i + 6
  elseif op == 'N' then i = i + 3
  elseif op == 'T' then i = i + 10 + 2 * tonumber(a[i + 9])
  elseif op == 'P' then
    local cnt = tonumber(a[i + 2])
    if cnt > 0 then redis.call('HSET', key(i + 1), unpack(a, i + 3, i + 2 + 2 * cnt)) end
    i = i + 3 + 2 * cnt
  elseif op == 'E' then
    local cnt = tonumber(a[i + 1])
    redis.call('XADD', KEYS[1], '*', unpack(a, i + 2, i + 1 + 2 * cnt))
    i = i + 2 + 2 * cnt
  elseif op == 'D' then redis.call('DEL', key(i + 1)); i = i + 2
  elseif op == 'Z' then redis.call('ZADD', key(i + 1), a[i + 2], a[i + 3]); i = i + 4
  elseif op == 'R' then redis.call('ZREM', key(i + 1), a[i + 2]); i = i + 3
  elseif op == 'S' then redis.call('SADD', key(i + 1), a[i + 2]); i = i + 3
  elseif op == 'M' then redis.call('SREM', key(i + 1), a[i + 2]); i = i + 3
  elseif op == 'Q' then
    local k, cnt = key(i + 1), tonumber(a[i + 3])
    for x = i + 4, i + 1 + 3 * cnt, 3 do
      local amt = tonumber(a[x + 2])
      if amt ~= 0 and redis.call('HINCRBY', k, a[x], amt) < 0 and amt < 0 then
        redis.call('HSET', k, a[x], 0)
      end
    end
    i = i + 4 + 3 * cnt
  elseif op == 'U' then
    local v = key(i + 1)
    local held = redis.call('HGET', v, 'quota_held')
    if held then
      local amt, f = {}, {'vms', 'vcpus', 'ram_mb', 'disk_gb'}
      for w in string.gmatch(held, '%d+') do amt[#amt + 1] = tonumber(w) end
      for _, k in ipairs({key(i + 2), key(i + 3)}) do
        for x = 1, 4 do
          if (amt[x] or 0) > 0 and redis.call('HINCRBY', k, f[x], -amt[x]) < 0 then
            redis.call('HSET', k, f[x], 0)
          end
        end
      end
      redis.call('HDEL', v, 'quota_held')
    end
    i = i + 4
  end
end
-- transitions: state, version, updated_ms, then the event
for _, p in ipairs(t) do
  local j = p[1]
  local k = key(j + 1)
  redis.call('HSET', k, a[j + 2], a[j + 4], 'version', p[2], 'updated_ms', a[j + 6])
  local ev = {'*'}
  for x = j + 10, j + 9 + 2 * tonumber(a[j + 9]) do ev[#ev + 1] = a[x] end
  ev[#ev + 1] = 'from'; ev[#ev + 1] = p[3]
  ev[#ev + 1] = 'version'; ev[#ev + 1] = p[2]
  redis.call('XADD', KEYS[1], unpack(ev))
  if audit then
    -- action: the event's type without '.state' and the transition's name ("vm.provisioned",
    -- "vm.power.running"), or the state observed; target: the key without its prefix and
    -- hash tag ("vm:<id>").
    local f = {}
    for x = j + 10, j + 8 + 2 * tonumber(a[j + 9]), 2 do f[a[x]] = a[x + 1] end
    local kind = (f.type or ''):gsub('%.state$', '')
    local name = (f.transition and f.transition ~= '') and f.transition or string.lower(a[j + 4])
    local target = k:gsub('^[^:]*:', '', 1):gsub('[{}]', '')
    -- group: the event's, else the object's own (a VM's power, a request's steps).
    local group = f.group or redis.call('HGET', k, 'group') or ''
    redis.call('XADD', audit, '*', 'at_ms', a[j + 6], 'actor', actor, 'action',
      kind .. '.' .. name, 'target', target, 'group', group, 'source', '',
      'request_id', rid, 'result', 'ok')
  end
end
return 1
