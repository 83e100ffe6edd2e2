-- auth_apikey_put: store a new API key for an existing user, with its expiry, unless the user
-- holds the most keys allowed (expired keys, whose records Redis dropped, are no longer
-- counted: they leave the index here).
-- retry: safe (the same id written again; a retry past the limit is refused, and the first
-- write stands)
-- KEYS: the key's record, the user's key index (zset by expires_ms), the user.
-- ARGV: id, now_ms, expires_ms, keys max, then field, value pairs of the record.
-- Returns 'OK', 'NO_USER' or 'FULL'.
local id, now, expires, max = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 0 then return 'NO_USER' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], id) == false and redis.call('ZCARD', KEYS[2]) >= max then
  return 'FULL'
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('ZADD', KEYS[2], expires, id)
return 'OK'
