-- timers_claim: claim the lease timers that are due, earliest first, for one taskmgr instance.
-- A timer is a member "<kind>:<vm id>" of the timers zset scored by its due time (platform
-- ms, lib/clock.h). Claiming moves it to the claimed zset as "<due>|<member>" scored by the
-- end of the claim (real ms): the instance that claimed it fires it and removes the claim in
-- the same step as its effect; a claim that ran out (its instance died) is put back with its
-- own due time first, so it fires again, in due order, on whichever instance claims next.
-- An extension re-scores the member in the timers zset; a claim in flight then finds the
-- VM's lease moved and does nothing.
-- retry: safe (a second call claims nothing more than what is due)
-- KEYS: timers zset, claimed zset.
-- ARGV: platform now_ms, real now_ms, claim_ms, max timers to claim.
-- Returns: the earliest due time left in the timers zset (-1: none), the earliest claim end
-- (-1: none), then member, due pairs of the timers claimed, in due order.
local timers, claimed = KEYS[1], KEYS[2]
local now, real_now = tonumber(ARGV[1]), tonumber(ARGV[2])
local claim_ms, max = tonumber(ARGV[3]), tonumber(ARGV[4])
if not now or not real_now or not claim_ms or not max or max < 0 then
  return {err = 'BADARGS now, real_now, claim_ms, max'}
end
-- Claims whose instance died: back to the timers with their due time.
local stale = redis.call('ZRANGEBYSCORE', claimed, '-inf', real_now)
for _, entry in ipairs(stale) do
  local due, member = string.match(entry, '^(%-?%d+)|(.+)$')
  redis.call('ZREM', claimed, entry)
  if due then
    -- An extension may have scheduled the member again meanwhile: that one stays.
    if not redis.call('ZSCORE', timers, member) then
      redis.call('ZADD', timers, due, member)
    end
  end
end
local out = {-1, -1}
if max > 0 then
  local due = redis.call('ZRANGEBYSCORE', timers, '-inf', now, 'WITHSCORES', 'LIMIT', 0, max)
  for i = 1, #due, 2 do
    local member, score = due[i], due[i + 1]
    redis.call('ZREM', timers, member)
    redis.call('ZADD', claimed, real_now + claim_ms, score .. '|' .. member)
    out[#out + 1] = member
    out[#out + 1] = score
  end
end
local first = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
if #first > 0 then out[1] = tonumber(first[2]) end
local claim = redis.call('ZRANGE', claimed, 0, 0, 'WITHSCORES')
if #claim > 0 then out[2] = tonumber(claim[2]) end
return out
