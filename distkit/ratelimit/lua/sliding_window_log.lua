-- Exact sliding window log, mirroring algorithms.sliding_window_log. State: list of µs timestamps, newest first,
-- at most `limit` long; expired entries are trimmed from the tail (amortised O(1) per call). An allowed hit
-- pushes first and reads the new length from LPUSH (no LLEN); a denied one pops its stamps back off.
-- KEYS[1]; ARGV: now_us ('' = Redis TIME), cost, 'limit period_us interval_us queue warmup_us'
--@include _prelude
local cost, limit, period = tonumber(ARGV[2]), P_LIMIT, P_PERIOD
local horizon = now - period
while true do
  local tail = redis.call('LINDEX', KEYS[1], -1)
  if not tail or tonumber(tail) > horizon then break end
  redis.call('RPOP', KEYS[1])
end
local n
if cost == 0 then
  n = redis.call('LLEN', KEYS[1])
  local reset = 0
  if n > 0 then reset = tonumber(redis.call('LINDEX', KEYS[1], 0)) + period - now end
  local ok = 0
  if n < limit then ok = 1 end
  return R(ok, limit - n, 0, math.ceil(reset), 0)
end
local stamp = string.format('%d', now)
local stamps = {}
for i = 1, cost do stamps[i] = stamp end
n = redis.call('LPUSH', KEYS[1], unpack(stamps)) - cost
if n + cost <= limit then
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000) + 1)
  return R(1, limit - n - cost, 0, math.ceil(period), 0)
end
redis.call('LPOP', KEYS[1], cost)  -- denied: undo the push (n >= 1 here, so the list keeps its TTL)
local reset = tonumber(redis.call('LINDEX', KEYS[1], 0)) + period - now
local retry = tonumber(redis.call('LINDEX', KEYS[1], -(n + cost - limit))) + period - now
return R(0, limit - n, math.ceil(retry), math.ceil(reset), 0)
