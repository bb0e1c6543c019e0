-- Watchdog renewal of an exclusive hold: extend the lease only if the same hold (owner and token) is there.
-- KEYS[1] lock hash   ARGV[1] owner   ARGV[2] fencing token   ARGV[3] lease ms.   Reply 1 renewed | 0 gone
local cur = redis.call('HMGET', KEYS[1], 'o', 't')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
