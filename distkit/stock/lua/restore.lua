-- Compensation of a deduction: once per order. KEYS as deduct.lua; ARGV[1] order_id, ARGV[2] sku, ARGV[3] ttl ms
-- Returns {restored qty (0 if nothing to restore), stock now}
local held = redis.call('HGET', KEYS[2], ARGV[1])
local left = redis.call('GET', KEYS[1])
if not left then
  return {-1, 0}
end
if (not held) or tonumber(held) <= 0 then
  if not held then
    redis.call('HSET', KEYS[2], ARGV[1], 0)  -- a later deduction for a cancelled order is refused
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
  end
  return {0, tonumber(left)}
end
local qty = tonumber(held)
local now = redis.call('INCRBY', KEYS[1], qty)
redis.call('HSET', KEYS[2], ARGV[1], -qty)
redis.call('XADD', KEYS[3], '*', 'kind', 'restore', 'sku', ARGV[2], 'order_id', ARGV[1], 'qty', qty, 'left', now)
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[3]))
return {qty, now}
