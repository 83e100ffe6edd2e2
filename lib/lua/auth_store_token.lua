-- auth_store_token: a token's hash and its expiry in one step, so no token outlives its TTL.
-- retry: safe (the same hash and TTL written again)
-- KEYS: the token hash (named by the token's SHA-256). ARGV: user, role, expires_ms, ttl_ms.
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'role', ARGV[2], 'expires_ms', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
