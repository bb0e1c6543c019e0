-- Release one hold of an exclusive lock; on the last one delete the lock and wake waiters.
--
-- KEYS[1] lock hash   KEYS[2] wake-up channel   KEYS[3] fair queue (list; fair locks only)
-- ARGV[1] owner   ARGV[2] fencing token of the hold ('' = any: undo an acquire whose reply was lost)
-- ARGV[3] hold count the caller believes it has
--
-- Reply 1 freed | 0 count decremented | 2 already done by an earlier call (a retry) | -1 not held by this
-- owner | -2 the caller's count disagrees with Redis.
local cur = redis.call('HMGET', KEYS[1], 'o', 'c', 't')
if cur[1] ~= ARGV[1] or (ARGV[2] ~= '' and cur[3] ~= ARGV[2]) then return -1 end
local count, expected = tonumber(cur[2]), tonumber(ARGV[3])
if count == expected - 1 then return 2 end
if count ~= expected then return -2 end
if count > 1 then
  redis.call('HINCRBY', KEYS[1], 'c', -1)
  return 0
end
redis.call('DEL', KEYS[1])
-- the payload names the fair queue's head, so only it retries; '' wakes every waiter
redis.call('PUBLISH', KEYS[2], KEYS[3] and redis.call('LINDEX', KEYS[3], 0) or '')
return 1
