-- KEYS[1] stock, KEYS[2] orders, KEYS[3] events; ARGV[1] qty, ARGV[2] ttl ms
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
