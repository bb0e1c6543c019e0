-- GCRA (token bucket / leaky bucket), mirroring distkit.ratelimit.algorithms.gcra. State: TAT in µs.
-- KEYS[1]; ARGV: now_us ('' = Redis TIME), cost, limit, period_us, interval_us, queue(0|1)
-- Returns {allowed, remaining, retry_after_us, reset_after_us, delay_us} (floats as strings)
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost, limit, t = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local dvt = t * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local function store(new_tat)
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
if ARGV[6] == '1' then
  local delay = tat - now
  local new_tat = tat + t * cost
  if cost == 0 then
    return {1, math.max(0, math.floor((dvt - delay) / t)), '0', tostring(delay), tostring(delay)}
  end
  if new_tat - now <= dvt then
    store(new_tat)
    return {1, math.max(0, math.floor((dvt - (new_tat - now)) / t)), '0', tostring(new_tat - now), tostring(delay)}
  end
  return {0, math.max(0, math.floor((dvt - delay) / t)), tostring(new_tat - now - dvt), tostring(delay), '0'}
end
local remaining_now = math.max(0, math.min(limit, math.floor((now - (tat - dvt)) / t)))
if cost == 0 then
  local retry = 0
  if remaining_now < 1 then retry = tat - dvt + t - now end
  local ok = 0
  if remaining_now >= 1 then ok = 1 end
  return {ok, remaining_now, tostring(retry), tostring(tat - now), '0'}
end
local new_tat = tat + t * cost
local diff = now - (new_tat - dvt)
if diff < 0 then
  return {0, remaining_now, tostring(-diff), tostring(tat - now), '0'}
end
store(new_tat)
return {1, math.floor(diff / t), '0', tostring(new_tat - now), '0'}
