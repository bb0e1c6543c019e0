-- A writer's invalidate: drop the entry and any in-flight reload's lock, publish. KEYS = data, lock; ARGV = channel, msg.
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
