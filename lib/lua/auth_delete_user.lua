-- auth_delete_user: delete a user with everything that is theirs: the record, its place in the
-- user index, their API keys and their memberships (each removed from the group's member hash
-- with a group.member event, as groups_member.lua does), unless they are the last ACTIVE admin.
-- The caller read the user's key ids and groups just before; if either changed meanwhile the
-- script refuses and the caller reads again.
-- retry: safe (a second run finds no user)
-- KEYS: the user, the user index, the ACTIVE admins, the user's API key index, the user's
-- groups, the event stream, then n_keys API key records, then the n_groups groups' member
-- hashes.
-- ARGV: name, n_keys, n_groups, now_ms, actor, then the n_groups group ids.
-- Returns 'OK', 'NO_USER', 'LAST_ADMIN' or 'CHANGED'.
local name, n_keys, n_groups = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NO_USER' end
if redis.call('SISMEMBER', KEYS[3], name) == 1 and redis.call('SCARD', KEYS[3]) <= 1 then
  return 'LAST_ADMIN'
end
if redis.call('ZCARD', KEYS[4]) ~= n_keys or redis.call('HLEN', KEYS[5]) ~= n_groups then
  return 'CHANGED'
end
for g = 1, n_groups do
  if not redis.call('HGET', KEYS[5], ARGV[5 + g]) then return 'CHANGED' end
end
for k = 1, n_keys do redis.call('DEL', KEYS[6 + k]) end
for g = 1, n_groups do
  local members, group = KEYS[6 + n_keys + g], ARGV[5 + g]
  local held = redis.call('HGET', members, name)
  if held then
    redis.call('HDEL', members, name)
    redis.call('XADD', KEYS[6], '*', 'type', 'group.member', 'key', members, 'group', group,
      'user', name, 'change', 'remove', 'role', '', 'from', held, 'actor', ARGV[5],
      'at_ms', ARGV[4])
  end
end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], name)
redis.call('SREM', KEYS[3], name)
return 'OK'
