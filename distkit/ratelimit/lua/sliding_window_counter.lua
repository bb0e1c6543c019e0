-- Sliding window counter, mirroring algorithms.sliding_window_counter. State: one integer key per window
-- ('<key>:<window number>', living two windows); a decision reads the current and previous ones (MGET).
-- KEYS: limiter keys; ARGV: see _prelude
--@include _prelude
local function decide(key, cost)
  local limit, period = P_LIMIT, P_PERIOD
  local window = math.floor(now / period)
  local k = window_key(key, window)
  local st = redis.call('MGET', k, window_key(key, window - 1))
  local cur, prev = tonumber(st[1] or 0), tonumber(st[2] or 0)
  local elapsed = now - window * period
  local estimate = prev * ((period - elapsed) / period) + cur
  local reset = (window + 1) * period - now
  if cur > 0 then reset = reset + period end
  if cost > 0 and estimate + cost <= limit then
    redis.call('INCRBY', k, cost)
    if cur == 0 then redis.call('PEXPIRE', k, math.ceil((2 * period - elapsed) / 1000) + 1) end
    return R(1, math.max(0, math.floor(limit - estimate - cost)), 0, math.ceil(reset), 0)
  end
  local remaining = math.max(0, math.floor(limit - estimate))
  if cost == 0 then
    local ok = 0
    if remaining >= 1 then ok = 1 end
    return R(ok, remaining, 0, math.ceil(reset), 0)
  end
  local room = limit - cur - cost
  local retry
  if prev > 0 and room >= 0 then
    retry = period * (1 - room / prev) - elapsed
  else
    local nxt = limit - cost
    retry = period - elapsed
    if cur > 0 and nxt < cur then retry = retry + period * (1 - nxt / cur) end
  end
  return R(0, remaining, math.ceil(math.max(1, retry)), math.ceil(reset), 0)
end
--@include _batch
