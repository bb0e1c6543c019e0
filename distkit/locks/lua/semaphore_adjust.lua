-- Change a semaphore's permit count: 'add' n (may be negative) or 'drain' (take every free permit away).
-- The adjusted count outlives the holds by ARGV[5] ms (an adjustment must not vanish with the last permit).
-- KEYS[1] hash   KEYS[2] holds   KEYS[3] channel
-- ARGV[1] configuration 's:<permits>'   ARGV[2] configured permits   ARGV[3] 'add' | 'drain'   ARGV[4] n
-- ARGV[5] keep ms.   Reply {1, permits now (add) | permits drained (drain)} | {-4, stored configuration}
-- | {-5, permits now} the count would go below zero
--@include shared_common
local hash, holds = KEYS[1], KEYS[2]
local stored = redis.call('HGET', hash, 'cfg')
if stored and stored ~= ARGV[1] then return {-4, stored} end
local now = server_ms()
reap(hash, holds, now)
local permits = tonumber(redis.call('HGET', hash, 'permits') or ARGV[2])
local used = tonumber(redis.call('HGET', hash, 'used') or '0')
local result
if ARGV[3] == 'add' then
  local n = tonumber(ARGV[4])
  if permits + n < 0 then return {-5, permits} end
  permits = permits + n
  result = permits
else
  result = math.max(0, permits - used)
  permits = permits - result
end
redis.call('HSET', hash, 'cfg', ARGV[1], 'permits', permits, 'used', used, 'keep', ARGV[5])
expire_all(hash, holds, now)
redis.call('PUBLISH', KEYS[3], '')
return {1, result}
