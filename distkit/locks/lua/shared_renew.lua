-- Watchdog renewal of one shared hold (read, write or permit): push its own lease end forward, and the
-- keys' expiry with it, only while that hold (same token) is still there and not expired.
-- KEYS[1] hash   KEYS[2] holds (zset)   ARGV[1] mode   ARGV[2] holder   ARGV[3] token   ARGV[4] lease ms
-- Reply 1 renewed | 0 gone
local hash, holds = KEYS[1], KEYS[2]
local me = ARGV[1] .. ':' .. ARGV[2]
if redis.call('HGET', hash, 't|' .. me) ~= ARGV[3] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = tonumber(redis.call('ZSCORE', holds, me))
if not ends or ends <= now then return 0 end
redis.call('ZADD', holds, now + tonumber(ARGV[4]), me)
local last = redis.call('ZRANGE', holds, -1, -1, 'WITHSCORES')[2]
redis.call('PEXPIREAT', hash, last)
redis.call('PEXPIREAT', holds, last)
return 1
