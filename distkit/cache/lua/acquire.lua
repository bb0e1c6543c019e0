-- Non-blocking reload lock: KEYS[1] = lock key; ARGV = token, lease_ms. Returns 1 if taken, 0 if held by another.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
