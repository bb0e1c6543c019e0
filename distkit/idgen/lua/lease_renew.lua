-- Extend a lease held by ARGV[1] and raise its persisted high-water mark; 0 if the lease is gone.
-- KEYS[1]: lease key, KEYS[2]: high-water hash. ARGV: token, ttl_ms, worker_id, mark_ms, mark_ttl_ms, release
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
if tonumber(ARGV[4]) > cur then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
