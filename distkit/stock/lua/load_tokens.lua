-- Adds tokens ARGV[2]..ARGV[3] (at most 10,000 per call: bounded work per script) to the pool.
-- KEYS[1] pool, KEYS[2] owners, KEYS[3] events; ARGV[1] sku, ARGV[2] first, ARGV[3] last, ARGV[4] ttl ms,
-- ARGV[5] "1" on the first call of a load (start a new sale: forget the old pool and orders)
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[2], '__loaded__', '-')
end
local batch = {}
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  batch[#batch + 1] = ARGV[1] .. '#' .. i
  if #batch == 500 then
    redis.call('SADD', KEYS[1], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  redis.call('SADD', KEYS[1], unpack(batch))
end
local ttl = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
