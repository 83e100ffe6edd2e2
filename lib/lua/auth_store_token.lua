-- auth_store_token: a token's record and its expiry in one step, so no token outlives its TTL.
-- retry: safe (the same record and TTL written again)
-- KEYS: the token record (named by the token's HMAC). ARGV: user, role, expires_ms, ttl_ms,
-- mac (the gateway's MAC over the key and the other fields; checked by the gateway), epoch
-- (the user's epoch when issued: a token of another epoch is refused).
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'role', ARGV[2], 'expires_ms', ARGV[3],
           'mac', ARGV[5], 'epoch', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
