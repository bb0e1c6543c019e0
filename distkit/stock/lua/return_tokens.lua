-- Compensation for the token pool: put the order's tokens back, once. KEYS as take_token.lua;
-- ARGV[1] order_id, ARGV[2] sku, ARGV[3] ttl ms. Returns the number of units restored.
local held = redis.call('HGET', KEYS[2], ARGV[1])
if (not held) or held == '-' then
  if not held then
    redis.call('HSET', KEYS[2], ARGV[1], '-')
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
  end
  return 0
end
local n = 0
for tok in string.gmatch(held, '[^,]+') do
  redis.call('SADD', KEYS[1], tok)
  n = n + 1
end
redis.call('HSET', KEYS[2], ARGV[1], '-')
redis.call('XADD', KEYS[3], '*', 'kind', 'restore', 'sku', ARGV[2], 'order_id', ARGV[1], 'qty', n,
  'left', redis.call('SCARD', KEYS[1]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[3]))
return n
