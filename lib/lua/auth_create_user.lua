-- auth_create_user: create a user unless the name is taken.
-- KEYS: the user hash. ARGV: name, role, password (Argon2id string), created_ms.
-- Returns 1 created, 0 taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'role', ARGV[2], 'password', ARGV[3],
  'created_ms', ARGV[4])
return 1
