-- auth_apikey_delete: revoke an API key: its record and its place in its user's index, only
-- while the record is that user's.
-- retry: safe (a second run finds no record and answers 0)
-- KEYS: the key's record, the user's key index. ARGV: id, the user.
-- Returns 1 revoked, 0 no such key of that user.
if redis.call('HGET', KEYS[1], 'user') ~= ARGV[2] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
