--@include _breaker
-- ARGV[3] = 'force_open' | 'reset'
if ARGV[3] == 'force_open' then
  S.forced = 1
  if S.st ~= OPEN then to(OPEN) end
else
  S.forced = 0
  to(CLOSED)
end
return finish(false)
