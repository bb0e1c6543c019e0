-- Shared preamble of the circuit-breaker scripts (--@include _breaker). One hash per breaker, KEYS[1] =
-- {prefix:name}: state fields st ep since forced iss dn pf ps, and the window ring b<i> c<i> f<i> s<i>
-- (bucket number, calls, failed, slow of slot i = bucket % buckets + 1). Mirrors stores/memory.py.
-- ARGV[1]: now in ms ('' = Redis TIME); ARGV[2]: 'bucket_ms buckets min_calls open_ms half_open_calls
-- half_open_max_ms failure_rate slow_call_rate ttl_ms'; the rest is per script.
local K = KEYS[1]
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000 + math.floor(t[2] / 1000)
end
local c = {}
for v in string.gmatch(ARGV[2], '%S+') do c[#c + 1] = tonumber(v) end
local BMS, N, MIN, OPEN_MS, HOC, HO_MAX, FR, SR, TTL = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
local CLOSED, OPEN, HALF = 0, 1, 2

local names = {'st', 'ep', 'since', 'forced', 'iss', 'dn', 'pf', 'ps'}
for i = 1, N do
  names[#names + 1] = 'b' .. i; names[#names + 1] = 'c' .. i
  names[#names + 1] = 'f' .. i; names[#names + 1] = 's' .. i
end
local raw = redis.call('HMGET', K, unpack(names))
local S = {}
for i = 1, 8 do S[names[i]] = tonumber(raw[i]) or 0 end
local ring = {}
for i = 1, N do
  local o = 8 + (i - 1) * 4
  ring[i] = {tonumber(raw[o + 1]) or -1, tonumber(raw[o + 2]) or 0, tonumber(raw[o + 3]) or 0, tonumber(raw[o + 4]) or 0}
end
local ring_dirty = {}
local cleared = false

local function to(state)
  S.st = state; S.ep = S.ep + 1; S.since = now
  S.iss = 0; S.dn = 0; S.pf = 0; S.ps = 0
  for i = 1, N do ring[i] = {-1, 0, 0, 0} end
  cleared = true
end

local function tick()
  if S.st == OPEN and S.forced == 0 and now >= S.since + OPEN_MS then
    to(HALF)
  elseif S.st == HALF and now - S.since >= HO_MAX then
    to(OPEN)
  end
end

local function tripped(calls, failed, slow)
  return calls > 0 and (failed / calls >= FR or slow / calls >= SR)
end

local function totals()
  local cur = math.floor(now / BMS)
  local a, b, d = 0, 0, 0
  for i = 1, N do
    local r = ring[i]
    if r[1] > cur - N and r[1] <= cur then a = a + r[2]; b = b + r[3]; d = d + r[4] end
  end
  return a, b, d
end

local function add(calls, failed, slow)
  if calls == 0 then return end
  local cur = math.floor(now / BMS)
  local i = cur % N + 1
  if ring[i][1] ~= cur then ring[i] = {cur, 0, 0, 0} end
  ring[i][2] = ring[i][2] + calls; ring[i][3] = ring[i][3] + failed; ring[i][4] = ring[i][4] + slow
  ring_dirty[i] = true
end

local function evaluate()
  if S.st ~= CLOSED then return end
  local a, b, d = totals()
  if a >= MIN and tripped(a, b, d) then to(OPEN) end
end

-- write back and answer {state, epoch, remaining_open_ms, forced, calls, failed, slow, granted}
local function finish(granted)
  if cleared then redis.call('DEL', K) end
  local out = {}
  for i = 1, 8 do out[#out + 1] = names[i]; out[#out + 1] = S[names[i]] end
  for i = 1, N do
    if ring_dirty[i] and ring[i][1] >= 0 then
      out[#out + 1] = 'b' .. i; out[#out + 1] = ring[i][1]
      out[#out + 1] = 'c' .. i; out[#out + 1] = ring[i][2]
      out[#out + 1] = 'f' .. i; out[#out + 1] = ring[i][3]
      out[#out + 1] = 's' .. i; out[#out + 1] = ring[i][4]
    end
  end
  redis.call('HSET', K, unpack(out))
  redis.call('PEXPIRE', K, TTL)
  local remaining = 0
  if S.st == OPEN then
    if S.forced == 1 then remaining = OPEN_MS else remaining = math.max(0, S.since + OPEN_MS - now) end
  end
  local a, b, d = 0, 0, 0
  if S.st == CLOSED then a, b, d = totals() end
  return {S.st, S.ep, remaining, S.forced, a, b, d, granted and 1 or 0}
end
