-- taskmgr_acquire: take due tasks: bump each one's epoch, name the caller holder, start the
-- lease, and return each taken task's hash (the caller needs no read after the take). The
-- caller passes the candidates' task keys: ids it read from the due set just before
-- (ZRANGEBYSCORE), or ids just popped from the wake set; a task another taskmgr took in
-- between is no longer due by now and is skipped, so the take stays atomic.
-- KEYS: due zset, then one task hash per candidate.
-- ARGV: holder, now_ms, lease_ms, then the candidates' ids, in the order of their keys.
-- Returns the earliest score left in the due set (-1: empty), then id, epoch, hash (flat
-- field/value list, as HGETALL) triples.
local out = {-1}
local now = tonumber(ARGV[2])
local until_ms = now + tonumber(ARGV[3])
for i = 4, #ARGV do
  local id, key = ARGV[i], KEYS[i - 2]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    local t = redis.call('HMGET', key, 'state', 'epoch')
    if not t[1] or t[1] == 'SUCCEEDED' or t[1] == 'FAILED' or t[1] == 'ABORTED' then
      redis.call('ZREM', KEYS[1], id)
    else
      local epoch = tonumber(t[2] or '0') + 1
      redis.call('HSET', key, 'holder', ARGV[1], 'epoch', epoch, 'lease_until_ms', until_ms)
      redis.call('ZADD', KEYS[1], until_ms, id)
      out[#out + 1] = id
      out[#out + 1] = tostring(epoch)
      out[#out + 1] = redis.call('HGETALL', key)
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[1] = tonumber(first[2]) end
return out
