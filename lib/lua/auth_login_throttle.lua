-- auth_login_throttle: failed sign-ins counted in a fixed window, per username or per address,
-- in Redis so that every gateway instance counts the same attempts.
-- retry: 'check' and 'clear' are safe; a retried 'fail' counts twice (errs toward refusing)
-- KEYS: the counter. ARGV: mode ('check', 'fail' or 'clear'), limit, window_ms.
-- Returns {1 refused / 0 allowed, ms until the window ends (0 when allowed)}.
local mode, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if mode == 'clear' then
    redis.call('DEL', KEYS[1])
    return {0, 0}
end
local n
if mode == 'fail' then
    n = redis.call('INCR', KEYS[1])
    if n == 1 then
        redis.call('PEXPIRE', KEYS[1], window)
    end
else
    n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
if n >= limit then
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl < 0 then -- a counter that lost its TTL never refuses forever
        redis.call('PEXPIRE', KEYS[1], window)
        ttl = window
    end
    return {1, ttl}
end
return {0, 0}
