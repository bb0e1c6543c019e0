-- Read-only view of a shared primitive. Expired holds that nobody has dropped yet do not count.
-- KEYS[1] hash   KEYS[2] holds (zset)   ARGV[1] mode r | w | s   ARGV[2] holder ('' = nobody)
-- Reply {live holds of the mode, mine 0|1, ms until the last of them ends, permits in use (s),
--        permits stored in Redis or -1, stored configuration or ''}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, me = ARGV[1] .. ':', ARGV[1] .. ':' .. ARGV[2]
local live, mine, last, used = 0, 0, 0, 0
local members = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #members, 2 do
  local m = members[i]
  if string.sub(m, 1, 2) == prefix then
    live = live + 1
    last = math.max(last, tonumber(members[i + 1]) - now)
    if m == me then mine = 1 end
    if ARGV[1] == 's' then used = used + tonumber(redis.call('HGET', KEYS[1], 'n|' .. m) or '1') end
  end
end
local stored = redis.call('HMGET', KEYS[1], 'permits', 'cfg')
return {live, mine, last, used, tonumber(stored[1] or '-1'), stored[2] or ''}
