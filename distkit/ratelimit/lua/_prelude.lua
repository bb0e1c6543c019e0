-- Shared preamble of the rate-limit scripts (included with --@include _prelude). Each script then defines
-- decide(key, cost) and ends with --@include _batch, so one call decides one key or a batch of keys.
-- KEYS: the limiter keys; ARGV: now_us ('' = Redis TIME), 'limit period_us interval_us queue warmup_us',
-- then one cost per key.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local P_LIMIT, P_PERIOD, P_T, P_QUEUE, P_WARM = string.match(ARGV[2], '(%S+) (%S+) (%S+) (%S+) (%S+)')
P_LIMIT, P_PERIOD, P_T, P_WARM = tonumber(P_LIMIT), tonumber(P_PERIOD), tonumber(P_T), tonumber(P_WARM)
-- the reply: 'allowed remaining retry_after_us reset_after_us delay_us' (one bulk string, whole µs)
local function R(a, b, c, d, e) return string.format('%d %d %d %d %d', a, b, c, d, e) end
-- the name of key's counter for window number w (same hash tag, so Cluster-safe; %d: no float formatting)
local function window_key(key, w) return key .. string.format(':%d', w) end
