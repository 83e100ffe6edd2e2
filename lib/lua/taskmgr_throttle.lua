-- taskmgr_throttle: heavy-task slots, shared by every taskmgr instance. A slot is a member
-- "<task id>@<host>" of the running zset; a host runs at most per_host of them and the
-- platform at most global. Tasks waiting for one are in the queue zset (id, by when they
-- began to wait) with their host in the waiting hash. The script first grants waiting
-- tasks, oldest first, as room allows (each granted one is put in the due and wake sets
-- at once, so whichever taskmgr is free resumes it), then, when the caller names a task,
-- answers whether that task holds a slot, taking one if there is room: a task never gets
-- ahead of one that waited before it and could run.
-- KEYS: running zset, queue zset, waiting hash, due zset, wake zset.
-- ARGV: per_host, global, now_ms, then optionally: task id, host, and the host of a slot
-- the task holds from an earlier attempt ("" none; given back when it differs from host).
-- Returns {held (1, 0; 0 when no task was named), number of waiting tasks granted}.
local per_host, global, now = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local id, host, old = ARGV[4], ARGV[5], ARGV[6]

if id and old and old ~= '' and old ~= host then
  redis.call('ZREM', KEYS[1], id .. '@' .. old)
end
if id and redis.call('ZSCORE', KEYS[1], id .. '@' .. host) then
  return {1, 0}
end
if id then -- asking now, so no longer in line (it would be granted twice)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end

-- Slots in use, per host and in all: a member's host follows the 36-character id and '@'.
local count, total = {}, 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = string.sub(m, 38)
  count[h] = (count[h] or 0) + 1
  total = total + 1
end

local granted = 0
if total < global then
  for _, w in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if total >= global then break end
    local h = redis.call('HGET', KEYS[3], w)
    if not h then
      -- Its host is unknown: out of line, and due, so that its stage asks again.
      redis.call('ZREM', KEYS[2], w)
      redis.call('ZADD', KEYS[4], 0, w)
      redis.call('ZADD', KEYS[5], now, w)
    elseif (count[h] or 0) < per_host then
      redis.call('ZREM', KEYS[2], w)
      redis.call('HDEL', KEYS[3], w)
      redis.call('ZADD', KEYS[1], now, w .. '@' .. h)
      redis.call('ZADD', KEYS[4], 0, w)
      redis.call('ZADD', KEYS[5], now, w)
      count[h] = (count[h] or 0) + 1
      total = total + 1
      granted = granted + 1
    end
  end
end

-- A task that left the line by a step that could not remove its host (its end, written
-- while it waited): its field goes.
if redis.call('HLEN', KEYS[3]) > redis.call('ZCARD', KEYS[2]) then
  for _, w in ipairs(redis.call('HKEYS', KEYS[3])) do
    if not redis.call('ZSCORE', KEYS[2], w) then redis.call('HDEL', KEYS[3], w) end
  end
end

if not id then return {0, granted} end
if total < global and (count[host] or 0) < per_host then
  redis.call('ZADD', KEYS[1], now, id .. '@' .. host)
  return {1, granted}
end
return {0, granted}
