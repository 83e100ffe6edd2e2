-- auth_set_user_state: set an existing user's state (ACTIVE or DISABLED); a name that names
-- no user is not created.
-- retry: safe (the same state written again)
-- KEYS: the user. ARGV: state.
-- Returns {} when there is no such user, else {role, created_ms} (each false when absent).
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {}
end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
return redis.call('HMGET', KEYS[1], 'role', 'created_ms')
