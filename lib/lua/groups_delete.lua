-- groups_delete: delete a group that has no members and no child groups, with its name, its
-- set of children and its place in the group index, and a group.deleted event, in one step.
-- KEYS: the group, its members, its name key, the group index, the event stream, its children
-- set, then the group hash of each id the children set held when the caller read it.
-- ARGV: group id, now_ms, actor, then those child ids (in the order of their KEYS).
-- Returns 'DELETED', 'NO_GROUP', 'HAS_MEMBERS', 'HAS_CHILDREN' (nothing written) or 'CHANGED'
-- (the name key names another group, or the children set changed since it was read: nothing
-- written; read again). A child id whose group is gone or has another parent is stale.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NO_GROUP' end
if redis.call('HLEN', KEYS[2]) > 0 then return 'HAS_MEMBERS' end
local name = redis.call('HGET', KEYS[1], 'name') or ''
if redis.call('HGET', KEYS[3], 'id') ~= ARGV[1] then return 'CHANGED' end
local n = #KEYS - 6
if redis.call('SCARD', KEYS[6]) ~= n then return 'CHANGED' end
for i = 1, n do
  local child = ARGV[3 + i]
  if redis.call('SISMEMBER', KEYS[6], child) == 0 then return 'CHANGED' end
  if redis.call('HGET', KEYS[6 + i], 'parent') == ARGV[1] then return 'HAS_CHILDREN' end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[6])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', '1000000', '*', 'type', 'group.deleted',
  'key', KEYS[1], 'group', ARGV[1], 'name', name, 'actor', ARGV[3],
  'at_ms', ARGV[2])
return 'DELETED'
