-- Take the first free worker id starting at ARGV[4]; returns {worker_id, persisted high-water ms} or -1.
-- KEYS[1]: the namespace base "{idgen:<ns>}"; lease keys "<base>:w:<id>", marks in hash "<base>:hw" (same slot).
-- ARGV: token, ttl_ms, max_worker_id, start
local base = KEYS[1]
local n = tonumber(ARGV[3]) + 1
local start = tonumber(ARGV[4])
for j = 0, n - 1 do
  local i = (start + j) % n
  if redis.call('SET', base .. ':w:' .. i, ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {i, redis.call('HGET', base .. ':hw', tostring(i)) or '0'}
  end
end
return -1
