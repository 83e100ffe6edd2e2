-- auth_put_user: create or change a user record, keeping the user index and the set of ACTIVE
-- admins in step with it, and never leaving the platform without an ACTIVE admin.
-- retry: safe (create: a second run finds the name taken; update: the expected MAC no longer
-- matches once written, and the caller reads again)
-- KEYS: the user, the user index (zset), the ACTIVE admins (set).
-- ARGV: mode ('create': only a new name; 'update': only while the stored mac is ARGV[2];
-- 'reset': whatever is stored, the bootstrap admin), expected mac (or ''), name, then field,
-- value pairs to write (a value '' deletes the field).
-- Returns 'OK', 'TAKEN' (create), 'NO_USER' or 'CHANGED' (update), 'LAST_ADMIN' (the change
-- would leave no ACTIVE admin).
local mode, name = ARGV[1], ARGV[3]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'create' and exists then return 'TAKEN' end
if mode == 'update' then
  if not exists then return 'NO_USER' end
  if redis.call('HGET', KEYS[1], 'mac') ~= ARGV[2] then return 'CHANGED' end
end
local cur = redis.call('HMGET', KEYS[1], 'role', 'state')
local role, state = cur[1] or 'user', cur[2] or 'ACTIVE'
local set, del = {}, {}
for i = 4, #ARGV - 1, 2 do
  if ARGV[i + 1] == '' then
    del[#del + 1] = ARGV[i]
  else
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
  if ARGV[i] == 'role' then role = ARGV[i + 1] end
  if ARGV[i] == 'state' then state = ARGV[i + 1] ~= '' and ARGV[i + 1] or 'ACTIVE' end
end
local admin = role == 'admin' and state ~= 'DISABLED'
if not admin and redis.call('SISMEMBER', KEYS[3], name) == 1 and
   redis.call('SCARD', KEYS[3]) <= 1 then
  return 'LAST_ADMIN'
end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end
if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
redis.call('ZADD', KEYS[2], 0, name)
if admin then
  redis.call('SADD', KEYS[3], name)
else
  redis.call('SREM', KEYS[3], name)
end
return 'OK'
