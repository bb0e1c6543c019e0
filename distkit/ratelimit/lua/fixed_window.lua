-- Fixed window counter, mirroring algorithms.fixed_window. State: hash {w = window, c = count}.
-- KEYS[1]; ARGV: now_us ('' = Redis TIME), cost, 'limit period_us interval_us queue'
--@include _prelude
local cost, limit, period = tonumber(ARGV[2]), P_LIMIT, P_PERIOD
local window = math.floor(now / period)
local st = redis.call('HMGET', KEYS[1], 'w', 'c')
local count = 0
if st[1] and tonumber(st[1]) == window then count = tonumber(st[2]) end
local reset = (window + 1) * period - now
if count + cost <= limit then
  if cost == 0 then
    if count < limit then return R(1, limit - count, 0, math.ceil(reset), 0) end
    return R(0, limit - count, math.ceil(reset), math.ceil(reset), 0)
  end
  redis.call('HSET', KEYS[1], 'w', window, 'c', count + cost)
  redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000) + 1)
  return R(1, limit - count - cost, 0, math.ceil(reset), 0)
end
return R(0, limit - count, math.ceil(reset), math.ceil(reset), 0)
