-- GCRA (token bucket / leaky bucket), mirroring distkit.ratelimit.algorithms.gcra. State: TAT in µs.
-- KEYS[1]; ARGV: now_us ('' = Redis TIME), cost, 'limit period_us interval_us queue(0|1)'
-- Returns 'allowed remaining retry_after_us reset_after_us delay_us' (times in whole µs, rounded up)
--@include _prelude
local cost, limit, t = tonumber(ARGV[2]), P_LIMIT, P_T
local dvt = t * limit
local raw = redis.call('GET', KEYS[1])
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
local function store(new_tat)
  local ttl = math.ceil((new_tat - now + P_WARM) / 1000) + 1
  if warm_start then
    redis.call('SET', KEYS[1], string.format('%.3f %.3f', new_tat, warm_start), 'PX', ttl)
  else
    redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
  end
end
if P_QUEUE == '1' then
  local delay = tat - now
  local new_tat = tat + t * cost
  if cost == 0 then
    return R(1, math.max(0, math.floor((dvt - delay) / t)), 0, math.ceil(delay), math.ceil(delay))
  end
  if new_tat - now <= dvt then
    store(new_tat)
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
store(new_tat)
return R(1, math.floor(diff / t), 0, math.ceil(new_tat - now), 0)
