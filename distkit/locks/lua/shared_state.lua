-- Read-only view of a shared primitive: how many live holds of one mode there are, and whether the caller's
-- own hold is among them (expired holds that nobody has dropped yet do not count).
-- KEYS[1] holds (zset)   ARGV[1] mode r | w | s   ARGV[2] holder ('' = nobody)   Reply {live, mine 0|1}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, me = ARGV[1] .. ':', ARGV[1] .. ':' .. ARGV[2]
local live, mine = 0, 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  if string.sub(m, 1, 2) == prefix then
    live = live + 1
    if m == me then mine = 1 end
  end
end
return {live, mine}
