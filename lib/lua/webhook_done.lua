-- webhook_done: record the outcome of one webhook delivery attempt, if the caller still holds
-- its claim (a claim that ran out may have been taken by another instance: its outcome wins).
-- delivered / dropped (the group's webhook is gone): the delivery is removed. retry: it is due
-- again at next_ms with one more attempt counted; later: due again at next_ms, no attempt
-- counted (its group has enough under way). failed (its last attempt): removed, with a
-- webhook.failed event in the stream and an audit record in the group, where its managers
-- read it.
-- retry: safe (the claim is checked; a second call finds it released)
-- KEYS: the deliveries hash, the due zset, the event stream, the audit stream.
-- ARGV: id, claim token, outcome (delivered, dropped, retry, later, failed), next_ms, now (real ms),
-- reason (the last error), at_ms (platform time, for the records).
-- Returns 1 when recorded, 0 when the claim was no longer the caller's.
local id, token, outcome = ARGV[1], ARGV[2], ARGV[3]
local text = redis.call('HGET', KEYS[1], id)
if not text then return 0 end
local ok, d = pcall(cjson.decode, text)
if not ok or type(d) ~= 'table' or d.claim ~= token then return 0 end
if outcome == 'retry' or outcome == 'later' then
  if outcome == 'retry' then
    d.attempts = (tonumber(d.attempts) or 0) + 1
    d.error = ARGV[6]
  end
  d.claim = nil
  redis.call('HSET', KEYS[1], id, cjson.encode(d))
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  return 1
end
redis.call('HDEL', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
if outcome == 'failed' then
  local attempts = tostring((tonumber(d.attempts) or 0) + 1)
  local group, vm, event = tostring(d.group or ''), tostring(d.vm or ''), tostring(d.event or '')
  redis.call('XADD', KEYS[3], '*', 'type', 'webhook.failed', 'group', group, 'vm', vm,
    'event', event, 'delivery', id, 'attempts', attempts, 'reason', ARGV[6], 'at_ms', ARGV[7])
  redis.call('XADD', KEYS[4], '*', 'at_ms', ARGV[7], 'actor', 'service:meter', 'action',
    'webhook.failed', 'target', vm ~= '' and ('vm:' .. vm) or ('group:' .. group), 'group', group,
    'source', '', 'request_id', '', 'result', 'failed: ' .. event .. ' ' .. id .. ' after ' ..
    attempts .. ' attempts: ' .. ARGV[6])
end
return 1
