-- GCRA (token bucket / leaky bucket), mirroring distkit.ratelimit.algorithms.gcra. State: TAT in µs.
-- KEYS: limiter keys; ARGV: see _prelude
-- Returns 'allowed remaining retry_after_us reset_after_us delay_us' (times in whole µs, rounded up)
--@include _prelude
local function store(key, new_tat, warm_start)
  local ttl = math.ceil((new_tat - now + P_WARM) / 1000) + 1
  if warm_start then
    redis.call('SET', key, string.format('%.3f %.3f', new_tat, warm_start), 'PX', ttl)
  else
    redis.call('SET', key, string.format('%.3f', new_tat), 'PX', ttl)
  end
end
local function decide(key, cost)
  local limit, t = P_LIMIT, P_T
  local dvt = t * limit
  local raw = redis.call('GET', key)
  local tat, warm_start
  if P_WARM > 0 then  -- warm-up, as algorithms.warm_up: state 'tat warm_start'
    if raw then
      local a, b = string.match(raw, '(%S+) (%S+)')
      tat, warm_start = tonumber(a), tonumber(b)
    else
      tat, warm_start = now, now
    end
    if tat < now - P_WARM then warm_start = now end
    local factor = math.min(1, (1 + 2 * (now - warm_start) / P_WARM) / 3)
    t = t / factor
    if factor >= 1 then dvt = t * limit else dvt = t end
  else
    tat = tonumber(raw or now)
  end
  if tat < now then tat = now end
  if P_QUEUE == '1' then
    local delay = tat - now
    local new_tat = tat + t * cost
    if cost == 0 then
      return R(1, math.max(0, math.floor((dvt - delay) / t)), 0, math.ceil(delay), math.ceil(delay))
    end
    if new_tat - now <= dvt then
      store(key, new_tat, warm_start)
      return R(1, math.max(0, math.floor((dvt - (new_tat - now)) / t)), 0, math.ceil(new_tat - now), math.ceil(delay))
    end
    return R(0, math.max(0, math.floor((dvt - delay) / t)), math.ceil(new_tat - now - dvt), math.ceil(delay), 0)
  end
  local remaining_now = math.max(0, math.min(limit, math.floor((now - (tat - dvt)) / t)))
  if cost == 0 then
    local retry = 0
    if remaining_now < 1 then retry = tat - dvt + t - now end
    local ok = 0
    if remaining_now >= 1 then ok = 1 end
    return R(ok, remaining_now, math.ceil(retry), math.ceil(tat - now), 0)
  end
  local new_tat = tat + t * cost
  local diff = now - (new_tat - dvt)
  if diff < 0 then
    return R(0, remaining_now, math.ceil(-diff), math.ceil(tat - now), 0)
  end
  store(key, new_tat, warm_start)
  return R(1, math.floor(diff / t), 0, math.ceil(new_tat - now), 0)
end
--@include _batch
