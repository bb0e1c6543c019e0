-- Acquire an exclusive lock (plain or fair), reentrantly. One script, so "check the owner, bump the count,
-- set the lease" is atomic.
--
-- KEYS[1] the lock: a string "<owner> <hold count> <fencing token>" whose TTL is the lease
-- fair locks only: KEYS[2] queue (list of waiting owners)   KEYS[3] queue deadlines (zset owner -> unix ms)
-- KEYS[4] wake-up channel
-- ARGV[1] owner   ARGV[2] hold count the caller believes it has   ARGV[3] lease ms
-- fair locks only: ARGV[4] waiter ttl ms   ARGV[5] 1 = take a place in the queue when busy
--
-- Reply: the fencing token (a string) when acquired; otherwise {0, ms} busy, re-check within ms | {-3, 0} a hold
-- the caller believes it has is gone | {-2, count} the caller's count disagrees with Redis.
-- Retries are safe: a repeated call that already ran (count == expected + 1) answers the token again.
local lock, owner = KEYS[1], ARGV[1]
local expected, lease, wttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]) or 0
local now = redis.call('TIME')
-- Fencing token: the server clock in microseconds. It grows across releases, expiries and key deletion
-- without a counter key that would have to outlive the lock.
local token = now[1] .. string.sub('00000' .. now[2], -6)

-- the uncontended case first: a single SET NX
if wttl == 0 and expected == 0 and redis.call('SET', lock, owner .. ' 1 ' .. token, 'NX', 'PX', lease) then
  return token
end

local cur = redis.call('GET', lock)
local holder, count, held_token
if cur then holder, count, held_token = string.match(cur, '^(%S+) (%d+) (%d+)$') end
if holder == owner then
  count = tonumber(count)
  if count == expected then
    local ttl = math.max(redis.call('PTTL', lock), lease)
    redis.call('SET', lock, owner .. ' ' .. (count + 1) .. ' ' .. held_token, 'PX', ttl)
  elseif count ~= expected + 1 then
    return {-2, count}
  end
  return held_token
end
if expected > 0 then return {-3, 0} end
if cur and wttl == 0 then return {0, redis.call('PTTL', lock)} end

if wttl > 0 then
  local queue, deadlines = KEYS[2], KEYS[3]
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  -- waiters that stopped refreshing their place (dead processes) lose it
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now_ms)) do
    redis.call('LREM', queue, 0, gone)
  end
  redis.call('ZREMRANGEBYSCORE', deadlines, '-inf', now_ms)
  local head = redis.call('LINDEX', queue, 0)
  if cur or (head and head ~= owner) then
    if ARGV[5] == '1' then
      if redis.call('ZADD', deadlines, now_ms + wttl, owner) == 1 then redis.call('RPUSH', queue, owner) end
      redis.call('PEXPIRE', queue, wttl)
      redis.call('PEXPIRE', deadlines, wttl)
    end
    if cur then return {0, redis.call('PTTL', lock)} end
    -- free, but an earlier waiter goes first: make sure it knows
    redis.call('PUBLISH', KEYS[4], head)
    return {0, tonumber(redis.call('ZSCORE', deadlines, head)) - now_ms}
  end
  if head then
    redis.call('LPOP', queue)
    redis.call('ZREM', deadlines, owner)
  end
end
redis.call('SET', lock, owner .. ' 1 ' .. token, 'PX', lease)
return token
