-- groups_delete: delete a group that has no members, with its name and its place in the
-- group index, and a group.deleted event, in one step.
-- KEYS: the group, its members, its name key, the group index, the event stream.
-- ARGV: group id, now_ms, actor.
-- Returns 'DELETED', 'NO_GROUP', 'HAS_MEMBERS' (nothing written) or 'CHANGED' (the name key
-- names another group: nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NO_GROUP' end
if redis.call('HLEN', KEYS[2]) > 0 then return 'HAS_MEMBERS' end
local name = redis.call('HGET', KEYS[1], 'name') or ''
if redis.call('HGET', KEYS[3], 'id') ~= ARGV[1] then return 'CHANGED' end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '1000000', '*', 'type', 'group.deleted',
  'key', KEYS[1], 'group', ARGV[1], 'name', name, 'actor', ARGV[3],
  'at_ms', ARGV[2])
return 'DELETED'
