-- Take the first free worker id starting at ARGV[3]; returns {worker_id, persisted mark ms, wait ms} or -1.
-- KEYS[1]: the marks hash; KEYS[2 + i]: the lease key of worker id i (every key the script touches is in KEYS).
-- ARGV: token, ttl_ms, start, mark_ttl_ms
-- The hash's 'init' field holds the server time it was created. A hash younger than one ttl means the marks are
-- new (first use of the namespace, or lost: FLUSHALL, failover to an empty replica): the caller waits out the
-- rest of that ttl before issuing, and its lease record lives that much longer.
local ttl = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local init = tonumber(redis.call('HGET', KEYS[1], 'init') or '-1')
if init < 0 then
  init = now
  redis.call('HSET', KEYS[1], 'init', tostring(now))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local wait = init + ttl - now
if wait < 0 then wait = 0 end
if wait > ttl then wait = ttl end
local n = #KEYS - 1
local start = tonumber(ARGV[3])
for j = 0, n - 1 do
  local i = (start + j) % n
  if redis.call('SET', KEYS[2 + i], ARGV[1], 'NX', 'PX', ttl + wait) then
    return {i, redis.call('HGET', KEYS[1], tostring(i)) or '0', wait}
  end
end
return -1
