--@include _breaker
-- HALF_OPEN probes, atomically global. ARGV[3] = 'acquire' | 'record' | 'release'; for record/release
-- ARGV[4] = the epoch the probe was granted in, ARGV[5..6] = failed slow (0/1).
local op = ARGV[3]
tick()
local granted = false
if op == 'acquire' then
  if S.st == HALF and S.iss < HOC then S.iss = S.iss + 1; granted = true end
elseif S.st == HALF and tonumber(ARGV[4]) == S.ep then
  if op == 'record' then
    S.dn = S.dn + 1; S.pf = S.pf + tonumber(ARGV[5]); S.ps = S.ps + tonumber(ARGV[6])
    if S.dn >= HOC then
      if tripped(S.dn, S.pf, S.ps) then to(OPEN) else to(CLOSED) end
    end
  elseif op == 'release' and S.iss > S.dn then
    S.iss = S.iss - 1
  end
end
return finish(granted)
