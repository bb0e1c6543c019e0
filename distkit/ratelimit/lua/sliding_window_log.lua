-- Exact sliding window log, mirroring algorithms.sliding_window_log. State: list of µs timestamps, newest first,
-- at most `limit` long; expired entries are trimmed from the tail (amortised O(1) per call).
-- KEYS[1]; ARGV: now_us ('' = Redis TIME), cost, 'limit period_us interval_us queue'
--@include _prelude
local cost, limit, period = tonumber(ARGV[2]), P_LIMIT, P_PERIOD
local horizon = now - period
while true do
  local tail = redis.call('LINDEX', KEYS[1], -1)
  if not tail or tonumber(tail) > horizon then break end
  redis.call('RPOP', KEYS[1])
end
local n = redis.call('LLEN', KEYS[1])
local reset = 0
if n > 0 then reset = tonumber(redis.call('LINDEX', KEYS[1], 0)) + period - now end
if n + cost <= limit then
  if cost == 0 then
    local ok = 0
    if n < limit then ok = 1 end
    return R(ok, limit - n, 0, math.ceil(reset), 0)
  end
  local stamp = string.format('%d', now)
  for _ = 1, cost do redis.call('LPUSH', KEYS[1], stamp) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000) + 1)
  return R(1, limit - n - cost, 0, math.ceil(period), 0)
end
local needed = n + cost - limit
local retry = tonumber(redis.call('LINDEX', KEYS[1], -needed)) + period - now
return R(0, limit - n, math.ceil(retry), math.ceil(reset), 0)
