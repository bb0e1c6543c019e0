-- Administrative unlock: delete the object's hold keys whoever holds them and wake every waiter.
-- KEYS[1..n-1] keys to delete   KEYS[n] wake-up channel.   Reply 1 something was held | 0 it was free
local n = redis.call('DEL', unpack(KEYS, 1, #KEYS - 1))
redis.call('PUBLISH', KEYS[#KEYS], '')
if n > 0 then return 1 end
return 0
