-- A waiter gives up (timeout, cancellation, error): drop its place in a fair queue or in the writers'
-- waiting set, and wake the others, who may now go first.
-- KEYS[1] queue (list; absent for read-write locks)   KEYS[2] waiting deadlines (zset)   KEYS[3] channel
-- ARGV[1] waiter.   Reply 1 it had a place | 0 it had none
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('PUBLISH', KEYS[3], redis.call('LINDEX', KEYS[1], 0) or '')
return 1
