-- Shared ending: one key answers one reply; a batch (acquire_many) answers one reply per key, in order, all
-- decided at the same `now` inside one atomic script.
if #KEYS == 1 then return decide(KEYS[1], tonumber(ARGV[3])) end
local out = {}
for i = 1, #KEYS do out[i] = decide(KEYS[i], tonumber(ARGV[i + 2])) end
return out
