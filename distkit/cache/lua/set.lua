-- A writer's set: store the entry, cancel any in-flight reload (its token-guarded write then fails), publish.
-- KEYS = data key, lock key; ARGV = envelope, physical ttl ms, channel, backplane message.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
