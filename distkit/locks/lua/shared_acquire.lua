-- Acquire a hold on a shared primitive: the read or write side of a read-write lock, or a semaphore permit.
-- Every hold has its own lease (a zset score), so a dead holder is dropped by the next caller without
-- blocking the living ones.
--
-- KEYS[1] hash (see shared_common)   KEYS[2] holds (zset <hold> -> lease end, unix ms)
-- KEYS[3] waiting writers (zset owner -> deadline)
-- ARGV[1] mode r | w | s   ARGV[2] holder (owner, or permit id)   ARGV[3] hold count the caller believes it has
-- ARGV[4] lease ms   ARGV[5] permits (s) or 1 = prefer writers (r, w)   ARGV[6] waiter ttl ms
-- ARGV[7] configuration ('rw:<0|1>' | 's:<permits>')   ARGV[8] permits wanted (s)   ARGV[9] 1 = may wait
--
-- Reply: the fencing token (a string) when acquired; otherwise {0, ms} busy, re-check within ms | {-1, 0} a
-- reader asked for the write lock | {-3, 0} a hold the caller believes it has is gone | {-2, count} the
-- caller's count disagrees with Redis | {-4, stored configuration} another configuration owns this name
-- | {-5, permits} more permits asked for than the semaphore has.
--@include shared_common
local hash, holds, writers = KEYS[1], KEYS[2], KEYS[3]
local mode, holder = ARGV[1], ARGV[2]
local expected, lease, limit, wttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cfg, units, waits = ARGV[7], tonumber(ARGV[8]), ARGV[9] == '1'
local stored = redis.call('HGET', hash, 'cfg')
if stored and stored ~= cfg then return {-4, stored} end
local now, t = server_ms()

reap(hash, holds, now)
redis.call('ZREMRANGEBYSCORE', writers, '-inf', now)

local me = mode .. ':' .. holder
local count = tonumber(redis.call('HGET', hash, me) or '0')
if count > 0 or expected > 0 then
  if count == expected + 1 then return redis.call('HGET', hash, 't|' .. me) end
  if count == 0 then return {-3, 0} end
  if count ~= expected then return {-2, count} end
  redis.call('HINCRBY', hash, me, 1)
  redis.call('ZADD', holds, 'GT', now + lease, me)
  expire_all(hash, holds, now)
  return redis.call('HGET', hash, 't|' .. me)
end

local function first_lease_end()
  local first = redis.call('ZRANGE', holds, 0, 0, 'WITHSCORES')[2]
  if not first then return -1 end
  return tonumber(first) - now
end
local writer = redis.call('HGET', hash, 'writer')
if mode == 'w' then
  if redis.call('HEXISTS', hash, 'r:' .. holder) == 1 then return {-1, 0} end
  if redis.call('ZCARD', holds) > 0 then
    if limit == 1 and waits then
      -- prefer writers: readers arriving from now on wait behind us
      redis.call('ZADD', writers, now + wttl, holder)
      redis.call('PEXPIRE', writers, wttl)
    end
    return {0, first_lease_end()}
  end
  redis.call('ZREM', writers, holder)
elseif mode == 'r' then
  if writer and writer ~= 'w:' .. holder then
    return {0, tonumber(redis.call('ZSCORE', holds, writer)) - now}
  end
  if limit == 1 and not writer and redis.call('ZCARD', writers) > 0 then return {0, wttl} end
else
  local permits = tonumber(redis.call('HGET', hash, 'permits') or limit)
  local used = tonumber(redis.call('HGET', hash, 'used') or '0')
  if units > permits and not redis.call('HGET', hash, 'keep') then return {-5, permits} end
  if used + units > permits then return {0, first_lease_end()} end
end

-- fencing token: server microseconds, and above the last one while the hash lives
local token = string.format('%.0f', math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]),
  (tonumber(redis.call('HGET', hash, 'ft')) or 0) + 1))
redis.call('HSET', hash, me, 1, 't|' .. me, token, 'ft', token, 'cfg', cfg)
if mode == 'w' then redis.call('HSET', hash, 'writer', me) end
if mode == 's' then
  redis.call('HSETNX', hash, 'permits', limit)
  redis.call('HSET', hash, 'n|' .. me, units)
  redis.call('HINCRBY', hash, 'used', units)
end
redis.call('ZADD', holds, now + lease, me)
expire_all(hash, holds, now)
return token
