-- Renew or release a lease held by ARGV[1]; 0 if the lease is gone (expired, taken, flushed).
-- KEYS[1]: lease key, KEYS[2]: marks hash. ARGV: token, ttl_ms, worker_id, mark_ms, mark_ttl_ms, mode
-- mode 0: renew, mark = max(mark, ARGV[4]); 1: release, mark = ARGV[4] exactly (the holder's real last
-- timestamp); 2: release, keep the mark.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local mode = ARGV[6]
if mode == '0' then
  local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
  if tonumber(ARGV[4]) > cur then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  if mode == '1' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
  redis.call('DEL', KEYS[1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
