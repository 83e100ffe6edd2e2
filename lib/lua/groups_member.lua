-- groups_member: add, change or remove one user's membership of a group, writing the group's
-- member hash and the user's group hash together with a group.member event, so the two never
-- disagree and nothing is written for a group deleted meanwhile.
-- KEYS: the group, its members, the user, the user's groups, the event stream.
-- ARGV: op (add | set | remove), group id, user, role, now_ms, actor, members max.
-- Returns 'OK', 'NO_GROUP', 'NO_USER' (add), 'MEMBER' (add: already one), 'NOT_MEMBER'
-- (set, remove) or 'FULL' (add: the group has members max).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NO_GROUP' end
local op = ARGV[1]
local held = redis.call('HGET', KEYS[2], ARGV[3])
if op == 'add' then
  if redis.call('EXISTS', KEYS[3]) == 0 then return 'NO_USER' end
  if held then return 'MEMBER' end
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[7]) then return 'FULL' end
elseif not held then
  return 'NOT_MEMBER'
end
local role = ARGV[4]
if op == 'remove' then
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[2])
  role = ''
else
  redis.call('HSET', KEYS[2], ARGV[3], role)
  redis.call('HSET', KEYS[4], ARGV[2], role)
end
redis.call('XADD', KEYS[5], '*', 'type', 'group.member',
  'key', KEYS[1], 'group', ARGV[2], 'user', ARGV[3], 'change', op, 'role', role,
  'from', held or '', 'actor', ARGV[6], 'at_ms', ARGV[5])
return 'OK'
