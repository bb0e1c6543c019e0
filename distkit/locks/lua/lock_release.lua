-- Release one hold of an exclusive lock; on the last one delete the lock and wake waiters.
--
-- KEYS[1] the lock ("<owner> <count> <token>")   KEYS[2] wake-up channel   KEYS[3] fair queue (fair locks only)
-- ARGV[1] owner   ARGV[2] fencing token of the hold ('' = any: undo an acquire whose reply was lost)
-- ARGV[3] hold count the caller believes it has
--
-- Reply 1 freed | 0 count decremented | 2 already done by an earlier call (a retry) | -1 not held (free)
-- | -2 the caller's count disagrees with Redis | {-3, token, server time us}: another owner holds it (the
-- caller tells from that owner's token, the server clock at its acquisition, whether it took the lock before
-- this release started: then the caller's critical section was not exclusive).
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local holder, count, token = string.match(cur, '^(%S+) (%d+) (%d+)$')
if holder ~= ARGV[1] then
  local now = redis.call('TIME')
  return {-3, token or '0', now[1] .. string.sub('00000' .. now[2], -6)}
end
if ARGV[2] ~= '' and token ~= ARGV[2] then return -1 end
count = tonumber(count)
local expected = tonumber(ARGV[3])
if count == expected - 1 then return 2 end
if count ~= expected then return -2 end
if count > 1 then
  redis.call('SET', KEYS[1], holder .. ' ' .. (count - 1) .. ' ' .. token, 'KEEPTTL')
  return 0
end
redis.call('DEL', KEYS[1])
-- the payload names the fair queue's head, so only it retries; '' wakes every waiter
redis.call('PUBLISH', KEYS[2], KEYS[3] and redis.call('LINDEX', KEYS[3], 0) or '')
return 1
