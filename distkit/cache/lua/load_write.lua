-- A finished reload: write the entry only while we still own the reload lock (a writer's set/invalidate deletes
-- the lock, so a load that started before the write can never overwrite it), free the lock, tell the backplane.
-- KEYS = data key, lock key; ARGV = token, envelope, physical ttl ms, channel, backplane message.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
