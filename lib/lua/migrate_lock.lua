-- migrate_lock: take, extend or release the migration lock, and record a finished step only
-- while holding it, so a stale holder (lock expired, taken by another instance) writes nothing.
-- KEYS: the lock, the schema version key.
-- ARGV: op ('take', 'step', 'release'), owner, ttl_ms, version (for 'step').
-- Returns 1 done, 0 refused (the lock is someone else's or free).
local lock, schema = KEYS[1], KEYS[2]
local op, owner, ttl = ARGV[1], ARGV[2], ARGV[3]
if op == 'take' then
  if redis.call('SET', lock, owner, 'NX', 'PX', ttl) then return 1 end
  if redis.call('GET', lock) == owner then
    redis.call('PEXPIRE', lock, ttl)
    return 1
  end
  return 0
end
if redis.call('GET', lock) ~= owner then return 0 end
if op == 'step' then
  redis.call('SET', schema, ARGV[4])
  redis.call('PEXPIRE', lock, ttl)
  return 1
elseif op == 'release' then
  redis.call('DEL', lock)
  return 1
end
return redis.error_reply('BADOP ' .. tostring(op))
