-- Strategy (c): one token per unit in a SET; SPOP qty of them for an order, idempotent per order.
-- KEYS[1] pool (set), KEYS[2] owners (hash order_id -> "tok1,tok2" or "-" once restored), KEYS[3] events
-- ARGV[1] qty, ARGV[2] order_id, ARGV[3] sku, ARGV[4] ttl ms
-- Returns {code, tokens}: 1 taken now, 2 already held, 0 not enough, -1 not loaded, -2 restored before
local held = redis.call('HGET', KEYS[2], ARGV[2])
if held then
  if held == '-' then
    return {-2, ''}
  end
  return {2, held}
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return {-1, ''}
end
local qty = tonumber(ARGV[1])
if redis.call('SCARD', KEYS[1]) < qty then
  return {0, ''}
end
local toks = redis.call('SPOP', KEYS[1], qty)
local joined = table.concat(toks, ',')
redis.call('HSET', KEYS[2], ARGV[2], joined)
redis.call('XADD', KEYS[3], '*', 'kind', 'deduct', 'sku', ARGV[3], 'order_id', ARGV[2], 'qty', qty,
  'left', redis.call('SCARD', KEYS[1]))
local ttl = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return {1, joined}
