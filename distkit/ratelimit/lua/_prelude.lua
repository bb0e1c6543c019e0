-- Shared preamble of the rate-limit scripts (included with --@include _prelude). Each script then defines
-- decide(key, cost) and ends with --@include _batch, so one call decides one key or a batch of keys.
-- KEYS: the limiter keys; ARGV: now_us ('' = Redis TIME), 'limit period_us count mode warmup_us delay',
-- then one cost per key. Every quantity is an integer below 2^53 (checked by distkit.ratelimit.Params), so
-- Lua's doubles compute exactly what algorithms.py computes with Python ints.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
local P_LIMIT, P_PERIOD, P_COUNT, P_MODE, P_WARM, P_DELAY =
  string.match(ARGV[2], '(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)')
P_LIMIT, P_PERIOD, P_COUNT = tonumber(P_LIMIT), tonumber(P_PERIOD), tonumber(P_COUNT)
P_WARM, P_DELAY = tonumber(P_WARM), tonumber(P_DELAY)
-- floor division and remainder of integers, exact (a double quotient can round up to the next integer)
local function divmod(x, c)
  local q = math.floor(x / c)
  local r = x - q * c
  if r < 0 then q = q - 1; r = r + c elseif r >= c then q = q + 1; r = r - c end
  return q, r
end
local function fdiv(x, c) local q = divmod(x, c); return q end
local function cdiv(x, c) local q, r = divmod(x, c); if r > 0 then q = q + 1 end; return q end
-- the reply: 'allowed remaining retry_after_us reset_after_us delay_us' (one bulk string, whole µs)
local function R(a, b, c, d, e) return string.format('%d %d %d %d %d', a, b, c, d, e) end
-- the name of key's counter for window number w (same hash tag, so Cluster-safe; %d: no float formatting)
local function window_key(key, w) return key .. string.format(':%d', w) end
-- PX for a state that stops mattering in `us` µs, plus one second of slack (a client-supplied clock in tests,
-- or a slow round trip, must never see a key vanish while its state still matters)
local function px(us) return cdiv(math.max(us, 1), 1000) + 1000 end
