-- Store the result if ARGV[1] still owns the in-progress claim; 0 if the claim was lost (reclaimed).
-- ARGV: token, result, ttl_ms
-- Safe to resend: the token stays on the completed record, so a repeat by the same owner answers 1 again.
local rec = redis.call('HMGET', KEYS[1], 's', 'tok')
if rec[2] ~= ARGV[1] then return 0 end
if rec[1] == 'P' then
  redis.call('HSET', KEYS[1], 's', 'C', 'r', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
