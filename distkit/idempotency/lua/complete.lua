-- Store the result if ARGV[1] still owns the in-progress claim; 0 if the claim was lost (reclaimed).
-- ARGV: token, result, ttl_ms
local rec = redis.call('HMGET', KEYS[1], 's', 'tok')
if rec[1] ~= 'P' or rec[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'C', 'r', ARGV[2])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
