-- GCRA (token bucket / leaky bucket), Guava SmoothWarmingUp and nginx limit_req, mirroring
-- distkit.ratelimit.algorithms (gcra, warming_up, nginx) operation for operation.
-- KEYS: limiter keys; ARGV: see _prelude.
-- State: 'tat_us tat_ticks' | 'next_free_us stored max_permits' | 'excess last_ms'.
--@include _prelude
local function gcra(key, cost, raw)
  local c, t = P_COUNT, P_PERIOD
  local dvt = P_LIMIT * t
  local lag = 0
  if raw then
    local a, b = string.match(raw, '(%S+) (%S+)')
    if not a then a, b = math.ceil(tonumber(raw) or now), 0 end  -- a float TAT written by distkit < 0.2
    lag = (tonumber(a) - now) * c + tonumber(b)
    if lag < 0 then lag = 0 end
  end
  local free = dvt - lag
  local rem = 0
  if free > 0 then rem = fdiv(free, t) end
  if P_MODE == 'queue' then
    local delay = cdiv(lag, c)
    if cost == 0 then return R(1, rem, 0, delay, delay) end
    local new_lag = lag + cost * t
    if new_lag <= dvt then
      local q, r = divmod(new_lag, c)
      redis.call('SET', key, string.format('%d %d', now + q, r), 'PX', px(cdiv(new_lag, c)))
      return R(1, fdiv(dvt - new_lag, t), 0, cdiv(new_lag, c), delay)
    end
    return R(0, rem, cdiv(new_lag - dvt, c), delay, 0)
  end
  if rem > P_LIMIT then rem = P_LIMIT end
  if cost == 0 then
    if rem >= 1 then return R(1, rem, 0, cdiv(lag, c), 0) end
    return R(0, 0, cdiv(lag + t - dvt, c), cdiv(lag, c), 0)
  end
  local new_lag = lag + cost * t
  if new_lag > dvt then return R(0, rem, cdiv(new_lag - dvt, c), cdiv(lag, c), 0) end
  local q, r = divmod(new_lag, c)
  redis.call('SET', key, string.format('%d %d', now + q, r), 'PX', px(cdiv(new_lag, c)))
  return R(1, fdiv(dvt - new_lag, t), 0, cdiv(new_lag, c), 0)
end

local function warm(key, cost, raw)
  local stable = P_PERIOD / P_COUNT
  local cold = stable * 3.0
  local threshold = 0.5 * P_WARM / stable
  local max_permits = threshold + 2.0 * P_WARM / (stable + cold)
  local slope = (cold - stable) / (max_permits - threshold)
  local cool_down = P_WARM / max_permits
  local next_free, stored = now, max_permits
  if raw then
    local a, b, m = string.match(raw, '(%S+) (%S+) (%S+)')
    next_free, stored = tonumber(a), tonumber(b)
    local old_max = tonumber(m)
    if old_max ~= max_permits then  -- the rate changed: Guava's setRate (resync at the old rate, rescale)
      if now > next_free then
        stored = math.min(old_max, stored + (now - next_free) / (P_WARM / old_max))
        next_free = now
      end
      stored = stored * max_permits / old_max
    end
  end
  if now > next_free then
    stored = math.min(max_permits, stored + (now - next_free) / cool_down)
    next_free = now
  end
  if cost == 0 or next_free > now then
    local ok = 0
    if next_free <= now then ok = 1 end
    return R(ok, ok, next_free - now, next_free - now + math.ceil((max_permits - stored) * cool_down), 0)
  end
  local spend = math.min(cost, stored)
  local take = spend
  local above = stored - threshold
  local wait = 0
  if above > 0.0 then
    local take_above = math.min(above, take)
    local length = (stable + above * slope) + (stable + (above - take_above) * slope)
    wait = math.floor(take_above * length / 2.0)
    take = take - take_above
  end
  wait = wait + math.floor(stable * take) + math.floor((cost - spend) * stable)
  next_free = next_free + wait
  stored = stored - spend
  local idle = next_free - now + math.ceil((max_permits - stored) * cool_down)
  redis.call('SET', key, string.format('%d %.17g %.17g', next_free, stored, max_permits), 'PX', px(idle))
  local left = 0
  if wait == 0 then left = 1 end
  return R(1, left, 0, idle, 0)
end

local function nginx_idle(excess, last, rate)
  if not excess then return 0 end
  local idle = (last + cdiv((excess + 1000) * 1000, rate)) * 1000 - now
  if idle > 0 then return idle end
  return 0
end

local function nginx(key, cost, raw)
  local rate = fdiv(P_COUNT * 1000 * 1000000, P_PERIOD)
  local burst = P_LIMIT * 1000
  local now_ms = fdiv(now, 1000)
  local e, excess, last = 0, nil, nil
  if raw then
    local a, b = string.match(raw, '(%S+) (%S+)')
    excess, last = tonumber(a), tonumber(b)
    local ms = now_ms - last
    if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
    e = excess - fdiv(rate * ms, 1000) + 1000
    if e < 0 then e = 0 end
  end
  if e > burst then
    local retry = (last + cdiv((excess + 1000 - burst) * 1000, rate)) * 1000 - now
    return R(0, 0, math.max(1, retry), nginx_idle(excess, last, rate), 0)
  end
  if cost == 0 then return R(1, fdiv(burst - e, 1000) + 1, 0, nginx_idle(excess, last, rate), 0) end
  local threshold = P_DELAY * 1000
  local delay_ms = 0
  if e > threshold then delay_ms = fdiv((e - threshold) * 1000, rate) end
  local idle = nginx_idle(e, now_ms, rate)
  redis.call('SET', key, string.format('%d %d', e, now_ms), 'PX', px(idle))
  return R(1, fdiv(burst - e, 1000), 0, idle, delay_ms * 1000)
end

local function decide(key, cost)
  local raw = redis.call('GET', key)
  if P_MODE == 'warm' then return warm(key, cost, raw) end
  if P_MODE == 'nginx' then return nginx(key, cost, raw) end
  return gcra(key, cost, raw)
end
--@include _batch
