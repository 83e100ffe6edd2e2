-- webhook_claim: take the webhook deliveries that are due for one meter instance. Claiming
-- scores the delivery at the end of its claim (now + claim_ms, longer than a delivery's
-- timeout) and records a token naming the claim: no other instance takes it meanwhile, and
-- only the holder of the token may record its outcome (webhook_done). A claim that runs out
-- (its meter died) makes the delivery due again, for whichever instance claims next.
-- retry: safe (a second call claims nothing more than what is due)
-- KEYS: the deliveries hash, the due zset.
-- ARGV: now (real ms), claim_ms, max deliveries, token prefix (unique per instance and call).
-- Returns id, delivery (JSON, with its claim) pairs.
local now, claim_ms, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not now or not claim_ms or not max or max < 1 then
  return {err = 'BADARGS now, claim_ms, max'}
end
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, max)
for i, id in ipairs(ids) do
  local text = redis.call('HGET', KEYS[1], id)
  local ok, d = pcall(cjson.decode, text or '')
  if not text or not ok or type(d) ~= 'table' then
    -- gone, or not a delivery: nothing to deliver
    redis.call('ZREM', KEYS[2], id)
    if text then redis.call('HDEL', KEYS[1], id) end
  else
    d.claim = ARGV[4] .. ':' .. i
    local json = cjson.encode(d)
    redis.call('HSET', KEYS[1], id, json)
    redis.call('ZADD', KEYS[2], now + claim_ms, id)
    out[#out + 1] = id
    out[#out + 1] = json
  end
end
return out
