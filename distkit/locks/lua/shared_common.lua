-- Shared by the scripts of read-write locks and semaphores (included with --@include shared_common).
-- hash fields: <mode>:<hold> = count, 't|'<hold> = token, 'n|'<hold> = permits of a semaphore hold,
-- writer = <hold>, ft = last token, cfg = configuration, permits = permits now (semaphore),
-- used = permits in use, keep = ms to keep an adjusted configuration alive without holds.
local function reap(hash, holds, now)
  local dead = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #dead == 0 then return end
  local writer = redis.call('HGET', hash, 'writer')
  for _, gone in ipairs(dead) do
    local n = redis.call('HGET', hash, 'n|' .. gone)
    if n then redis.call('HINCRBY', hash, 'used', -tonumber(n)) end
    redis.call('HDEL', hash, gone, 't|' .. gone, 'n|' .. gone)
    if gone == writer then redis.call('HDEL', hash, 'writer') end
  end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
end

-- every key lives until the last lease ends; an adjusted semaphore configuration 'keep' ms longer
local function expire_all(hash, holds, now)
  local last = redis.call('ZRANGE', holds, -1, -1, 'WITHSCORES')[2]
  local keep = tonumber(redis.call('HGET', hash, 'keep') or '0')
  local target = 0
  if last then
    target = tonumber(last)
    redis.call('PEXPIREAT', holds, last)
  end
  if keep > 0 then target = math.max(target, now + keep) end
  if target > 0 then
    redis.call('PEXPIREAT', hash, string.format('%.0f', target))
  else
    redis.call('DEL', hash, holds)
  end
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end
