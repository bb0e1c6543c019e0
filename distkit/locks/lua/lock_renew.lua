-- Watchdog renewal of an exclusive hold: extend the lease only if the same hold (owner and token) is there.
-- KEYS[1] the lock ("<owner> <count> <token>")   ARGV[1] owner   ARGV[2] fencing token   ARGV[3] lease ms
-- Reply 1 renewed | 0 gone
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local holder, _, token = string.match(cur, '^(%S+) (%d+) (%d+)$')
if holder == ARGV[1] and token == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
