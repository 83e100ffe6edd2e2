-- webhook_enqueue: turn one event of the stream into a webhook delivery for its group, and
-- acknowledge the event for the webhook consumer group, in one step: an event read twice (a
-- restart, a claim from a dead meter) makes one delivery, and an event is never acknowledged
-- without its delivery recorded.
-- retry: safe (HSETNX: the delivery of an event is made once)
-- KEYS: the event stream, the deliveries hash, the due zset, the group's webhook hash.
-- ARGV: consumer group, stream id (the delivery id), the delivery (JSON), now (real ms).
-- Returns 1 when a delivery was made, 0 when none (the group has no webhook, or it exists).
local made = 0
if redis.call('HGET', KEYS[4], 'url') then
  if redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3]) == 1 then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
    made = 1
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return made
