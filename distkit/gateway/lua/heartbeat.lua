-- KEYS[1] members zset (id -> expiry ms), KEYS[2] data hash (id -> JSON)
-- ARGV[1] id, ARGV[2] JSON, ARGV[3] ttl ms, ARGV[4] events channel
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl * 3)
redis.call('PEXPIRE', KEYS[2], ttl * 3)
if (not prev) or tonumber(prev) < now then
  redis.call('PUBLISH', ARGV[4], 'up:' .. ARGV[1])
  return 1
end
return 0
