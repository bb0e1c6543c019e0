--@include _breaker
-- One flush: ARGV[3..5] = calls failed slow counted since the last flush (added to the current bucket),
-- ARGV[6] = the epoch at which the caller tripped locally ('' = none): trips the shared state if still CLOSED then.
tick()
if S.st == CLOSED then add(tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])) end
local trip = tonumber(ARGV[6])
if trip and S.st == CLOSED and trip == S.ep then to(OPEN) else evaluate() end
return finish(false)
