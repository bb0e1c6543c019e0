-- Exact sliding window log, mirroring algorithms.sliding_window_log. State: a sorted set, one member per
-- allowed decision, scored by its µs stamp, named '<running total of units, 16 digits> <units>' (zero-padded,
-- so members of one stamp sort by running total, as the script expects of rank order; a cost of any size is
-- one member, and the live count is a difference of two running totals). Work per decision: O(log n) plus at
-- most 1000 expired members trimmed (an idle key's backlog goes over the next calls, or with the key's TTL).
-- KEYS: limiter keys; ARGV: see _prelude
--@include _prelude
local TRIM = 1000
local function total_of(member) return tonumber(string.match(member, '^(%d+)')) end
local function decide(key, cost)
  local limit, period = P_LIMIT, P_PERIOD
  local horizon = now - period
  local expired = redis.call('ZCOUNT', key, '-inf', horizon)
  local trimmed = math.min(expired, TRIM)
  if trimmed > 0 then redis.call('ZREMRANGEBYRANK', key, 0, trimmed - 1) end
  local first = expired - trimmed  -- rank of the first live member
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  local total, n, reset = 0, 0, 0
  if newest[1] then total = total_of(newest[1]) end
  local base = total
  local head = redis.call('ZRANGE', key, first, first)
  if head[1] then
    local c, u = string.match(head[1], '(%d+) (%d+)')
    base = tonumber(c) - tonumber(u)
    n = total - base
    reset = tonumber(newest[2]) + period - now
  end
  if n + cost <= limit then
    if cost == 0 then
      local ok = 0
      if n < limit then ok = 1 end
      return R(ok, limit - n, 0, reset, 0)
    end
    redis.call('ZADD', key, now, string.format('%016d %d', total + cost, cost))
    redis.call('PEXPIRE', key, px(period))
    return R(1, limit - n - cost, 0, period, 0)
  end
  -- denied: the first member whose running total reaches base + needed must leave the window first
  local target = base + n + cost - limit
  -- every member holds >= 1 unit, so the one we want is at most (target - base) - 1 ranks after `first`; when
  -- every cost was 1 (the common case) it is exactly there: two reads instead of a binary search
  local lo, hi = first, math.min(redis.call('ZCARD', key) - 1, first + (target - base) - 1)
  if hi > lo and total_of(redis.call('ZRANGE', key, hi - 1, hi - 1)[1]) < target then lo = hi end
  while lo < hi do
    local mid = fdiv(lo + hi, 2)
    if total_of(redis.call('ZRANGE', key, mid, mid)[1]) >= target then hi = mid else lo = mid + 1 end
  end
  local stamp = tonumber(redis.call('ZRANGE', key, lo, lo, 'WITHSCORES')[2])
  return R(0, limit - n, stamp + period - now, reset, 0)
end
--@include _batch
