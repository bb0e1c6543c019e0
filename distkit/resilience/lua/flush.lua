--@include _breaker
-- One flush: ARGV[3..5] = calls failed slow counted since the last flush (added to the current bucket),
-- ARGV[6] = the epoch at which the caller tripped locally ('' = none; -1 = before it ever saw the store): trips
-- the shared state if it is still CLOSED in that epoch.
tick()
if S.st == CLOSED then add(tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])) end
local trip = tonumber(ARGV[6])
if trip and S.st == CLOSED and (trip == S.ep or trip < 0) then to(OPEN) else evaluate() end
return finish(false)
