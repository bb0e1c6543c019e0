-- Exact sliding window log, mirroring algorithms.sliding_window_log. State: list of µs timestamps, newest first,
-- at most `limit` long; expired entries are trimmed from the tail (amortised O(1) per call). An allowed hit
-- pushes first and reads the new length from LPUSH (no LLEN); a denied one pops its stamps back off.
-- KEYS: limiter keys; ARGV: see _prelude
--@include _prelude
local function decide(key, cost)
  local limit, period = P_LIMIT, P_PERIOD
  local horizon = now - period
  while true do
    local tail = redis.call('LINDEX', key, -1)
    if not tail or tonumber(tail) > horizon then break end
    redis.call('RPOP', key)
  end
  local n
  if cost == 0 then
    n = redis.call('LLEN', key)
    local reset = 0
    if n > 0 then reset = tonumber(redis.call('LINDEX', key, 0)) + period - now end
    local ok = 0
    if n < limit then ok = 1 end
    return R(ok, limit - n, 0, math.ceil(reset), 0)
  end
  local stamp = string.format('%d', now)
  local stamps = {}
  for i = 1, cost do stamps[i] = stamp end
  n = redis.call('LPUSH', key, unpack(stamps)) - cost
  if n + cost <= limit then
    redis.call('PEXPIRE', key, math.ceil(period / 1000) + 1)
    return R(1, limit - n - cost, 0, math.ceil(period), 0)
  end
  redis.call('LPOP', key, cost)  -- denied: undo the push (n >= 1 here, so the list keeps its TTL)
  local reset = tonumber(redis.call('LINDEX', key, 0)) + period - now
  local retry = tonumber(redis.call('LINDEX', key, -(n + cost - limit))) + period - now
  return R(0, limit - n, math.ceil(retry), math.ceil(reset), 0)
end
--@include _batch
