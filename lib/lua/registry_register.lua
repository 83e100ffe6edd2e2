-- registry_register: announce (or refresh) one service instance for ttl ms, in Redis time.
-- retry: safe (registering twice is registering once, with a slightly later expiry)
-- KEYS: the service's zset (member = instance, score = expiry), the instance hash, the set
--       of service names.
-- ARGV: service, instance, ttl_ms, endpoint, status, started_ms. Returns Redis time in ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('HSET', KEYS[2], 'service', ARGV[1], 'instance', ARGV[2],
  'endpoint', ARGV[4], 'status', ARGV[5], 'started_ms', ARGV[6],
  'last_heartbeat_ms', now, 'expires_ms', now + ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return now
