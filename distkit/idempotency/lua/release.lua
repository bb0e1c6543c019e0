-- Remove the in-progress claim of ARGV[1] (the handler failed; a retry must run again). 0 if not ours.
local rec = redis.call('HMGET', KEYS[1], 's', 'tok')
if rec[1] ~= 'P' or rec[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
