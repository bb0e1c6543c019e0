-- KEYS[1] members, KEYS[2] data; ARGV[1] id, ARGV[2] events channel
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], 'down:' .. ARGV[1])
end
return removed
