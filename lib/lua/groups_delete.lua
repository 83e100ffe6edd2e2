-- groups_delete: delete a group that has no members, no child groups and no live VMs, with its
-- name, its sets of children and VMs and its place in the group index, and a group.deleted
-- event, in one step.
-- KEYS: the group, its members, its name key, the group index, the event stream, its children
-- set, its VM set, then the group hash of each id the children set held when the caller read
-- it, then the VM hash of each id the VM set held, then the group's usage counters to delete
-- with it (its group-usage hash, its webhook hash and the group-user-usage hash of each owner
-- of those VMs).
-- ARGV: group id, now_ms, actor, the number of child ids, the child ids (in the order of their
-- KEYS), then the VM ids (likewise).
-- Returns 'DELETED', 'NO_GROUP', 'HAS_MEMBERS', 'HAS_RESERVATIONS' (the scheduler holds
-- capacity for it), 'HAS_CHILDREN', 'HAS_VMS' (nothing written) or
-- 'CHANGED' (the name key names another group, or a set changed since it was read: nothing
-- written; read again). A child whose group is gone or has another parent is stale; a VM
-- that is gone, DISPOSED or REJECTED does not live.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NO_GROUP' end
if redis.call('HLEN', KEYS[2]) > 0 then return 'HAS_MEMBERS' end
local held = redis.call('HGET', KEYS[1], 'reservations')
if held and held ~= '' and held ~= '[]' then return 'HAS_RESERVATIONS' end
local name = redis.call('HGET', KEYS[1], 'name') or ''
if redis.call('HGET', KEYS[3], 'id') ~= ARGV[1] then return 'CHANGED' end
local n = tonumber(ARGV[4])
local m = #ARGV - 4 - n
if redis.call('SCARD', KEYS[6]) ~= n or redis.call('SCARD', KEYS[7]) ~= m then
  return 'CHANGED'
end
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[6], ARGV[4 + i]) == 0 then return 'CHANGED' end
  if redis.call('HGET', KEYS[7 + i], 'parent') == ARGV[1] then return 'HAS_CHILDREN' end
end
for i = 1, m do
  if redis.call('SISMEMBER', KEYS[7], ARGV[4 + n + i]) == 0 then return 'CHANGED' end
  local state = redis.call('HGET', KEYS[7 + n + i], 'state')
  if state and state ~= 'DISPOSED' and state ~= 'REJECTED' then return 'HAS_VMS' end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[7])
for i = 8 + n + m, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'type', 'group.deleted',
  'key', KEYS[1], 'group', ARGV[1], 'name', name, 'actor', ARGV[3],
  'at_ms', ARGV[2])
return 'DELETED'
