-- Release one hold of a read-write lock side or a semaphore permit; on the last one wake waiters.
--
-- KEYS[1] hash   KEYS[2] holds (zset)   KEYS[3] wake-up channel
-- ARGV[1] mode r | w | s   ARGV[2] holder   ARGV[3] fencing token ('' = any)   ARGV[4] count the caller believes
-- ARGV[5] permits to give back (s; 0 = all of them)   ARGV[6] permits the caller believes the hold has ('' = unknown)
--
-- Reply 1 freed | 0 count decremented | 3 some of a permit's units given back | 2 already done by an earlier
-- call (a retry) | -1 not held | -2 the caller's count disagrees with Redis | {-3, token, server time us}: not
-- held, and another owner holds a conflicting hold (a writer; for a writer, anyone) taken at that token.
--@include shared_common
local hash, holds = KEYS[1], KEYS[2]
local me = ARGV[1] .. ':' .. ARGV[2]
local now, t = server_ms()

local function not_held()
  if ARGV[1] == 's' then return -1 end
  local first
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', holds, '(' .. now, '+inf')) do
    if m ~= me and (ARGV[1] == 'w' or string.sub(m, 1, 2) == 'w:') then
      local token = tonumber(redis.call('HGET', hash, 't|' .. m) or '')
      if token and (not first or token < first) then first = token end
    end
  end
  if not first then return -1 end
  return {-3, string.format('%.0f', first), t[1] .. string.sub('00000' .. t[2], -6)}
end

local cur = redis.call('HMGET', hash, me, 't|' .. me, 'n|' .. me)
if not cur[1] or (ARGV[3] ~= '' and cur[2] ~= ARGV[3]) then return not_held() end
local ends = tonumber(redis.call('ZSCORE', holds, me))
if not ends or ends <= now then return not_held() end
local count, expected = tonumber(cur[1]), tonumber(ARGV[4])
if count == expected - 1 then return 2 end
if count ~= expected then return -2 end
if count > 1 then
  redis.call('HINCRBY', hash, me, -1)
  return 0
end
local units = tonumber(cur[3] or '0')
local give, believed = tonumber(ARGV[5]), tonumber(ARGV[6])
if give > 0 and give < units then
  if believed and units == believed - give then return 2 end
  redis.call('HINCRBY', hash, 'n|' .. me, -give)
  redis.call('HINCRBY', hash, 'used', -give)
  redis.call('PUBLISH', KEYS[3], '')
  return 3
end
if units > 0 then redis.call('HINCRBY', hash, 'used', -units) end
redis.call('HDEL', hash, me, 't|' .. me, 'n|' .. me)
redis.call('ZREM', holds, me)
if ARGV[1] == 'w' then redis.call('HDEL', hash, 'writer') end
expire_all(hash, holds, now)
redis.call('PUBLISH', KEYS[3], '')
return 1
