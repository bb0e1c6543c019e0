-- Sliding window counter, mirroring algorithms.sliding_window_counter (integers: estimate * period). State: one
-- integer key per window ('<key>:<window number>', living two windows); a decision reads the current and
-- previous ones (MGET). KEYS: limiter keys; ARGV: see _prelude
--@include _prelude
local function decide(key, cost)
  local limit, period = P_LIMIT, P_PERIOD
  local window = fdiv(now, period)
  local k = window_key(key, window)
  local st = redis.call('MGET', k, window_key(key, window - 1))
  local cur, prev = tonumber(st[1] or 0), tonumber(st[2] or 0)
  local elapsed = now - window * period
  local est = prev * (period - elapsed) + cur * period
  local lim = limit * period
  if cost > 0 and est + cost * period <= lim then
    redis.call('INCRBY', k, cost)
    if cur == 0 then redis.call('PEXPIRE', k, px(2 * period - elapsed)) end
    return R(1, fdiv(lim - est - cost * period, period), 0, (window + 2) * period - now, 0)
  end
  local reset = (window + 1) * period - now
  if cur > 0 then reset = reset + period end
  local remaining = 0
  if lim > est then remaining = fdiv(lim - est, period) end
  if cost == 0 then
    local ok = 0
    if remaining >= 1 then ok = 1 end
    return R(ok, remaining, 0, reset, 0)
  end
  local room = limit - cur - cost
  local retry
  if prev > 0 and room >= 0 then
    retry = cdiv(period * (prev - room), prev) - elapsed
  else
    local nxt = limit - cost
    retry = period - elapsed
    if cur > 0 and nxt < cur then retry = retry + cdiv(period * (cur - nxt), cur) end
  end
  return R(0, remaining, math.max(1, retry), reset, 0)
end
--@include _batch
