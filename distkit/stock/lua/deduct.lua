-- Check-and-decrement, idempotent per order, with the deduction event in the same atomic step.
-- KEYS[1] stock (int), KEYS[2] orders (hash order_id -> qty, or -qty once restored), KEYS[3] events (stream)
-- ARGV[1] qty, ARGV[2] order_id, ARGV[3] sku, ARGV[4] ttl ms
-- Returns {code, left}: code 1 deducted now, 2 this order already holds it, 0 not enough, -1 not loaded,
-- -2 the order was restored (cancelled) before.
local held = redis.call('HGET', KEYS[2], ARGV[2])
local left = redis.call('GET', KEYS[1])
if not left then
  return {-1, 0}
end
if held then
  if tonumber(held) > 0 then
    return {2, tonumber(left)}
  end
  return {-2, tonumber(left)}
end
local qty = tonumber(ARGV[1])
if tonumber(left) < qty then
  return {0, tonumber(left)}
end
local now = redis.call('DECRBY', KEYS[1], qty)
redis.call('HSET', KEYS[2], ARGV[2], qty)
redis.call('XADD', KEYS[3], '*', 'kind', 'deduct', 'sku', ARGV[3], 'order_id', ARGV[2], 'qty', qty, 'left', now)
local ttl = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return {1, now}
