-- Fixed window counter, mirroring algorithms.fixed_window. State: one integer key per window,
-- '<key>:<window number>', expiring with its window; an allowed hit is one INCRBY.
-- KEYS: limiter keys; ARGV: see _prelude
--@include _prelude
local function decide(key, cost)
  local limit, period = P_LIMIT, P_PERIOD
  local window = fdiv(now, period)
  local k = window_key(key, window)
  local reset = (window + 1) * period - now
  if cost == 0 then
    local count = tonumber(redis.call('GET', k) or 0)
    if count < limit then return R(1, limit - count, 0, reset, 0) end
    return R(0, limit - count, reset, reset, 0)
  end
  local count = redis.call('INCRBY', k, cost)
  if count == cost then redis.call('PEXPIRE', k, px(reset)) end
  if count <= limit then return R(1, limit - count, 0, reset, 0) end
  redis.call('DECRBY', k, cost)  -- over the limit: undo (cost <= limit, so the key existed and keeps its TTL)
  return R(0, limit - count + cost, reset, reset, 0)
end
--@include _batch
