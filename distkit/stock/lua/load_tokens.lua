-- KEYS[1] pool, KEYS[2] owners, KEYS[3] events; ARGV[1] sku, ARGV[2] count, ARGV[3] ttl ms
redis.call('DEL', KEYS[1], KEYS[2])
local n = tonumber(ARGV[2])
local batch = {}
for i = 1, n do
  batch[#batch + 1] = ARGV[1] .. '#' .. i
  if #batch == 500 then
    redis.call('SADD', KEYS[1], unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  redis.call('SADD', KEYS[1], unpack(batch))
end
redis.call('HSET', KEYS[2], '__loaded__', '-')
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return n
