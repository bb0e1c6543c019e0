-- Shared ending: one key answers one reply; a batch (acquire_many) answers one bulk string with one line per key,
-- in order (one reply to parse instead of one per key), all decided at the same `now` inside one atomic script.
-- In a batch each key is decided under pcall, so an error on one key (WRONGTYPE: something else wrote to it)
-- answers the line 'E <message>' for that key alone: the keys before and after it are decided normally (an
-- error never undoes or skips another key's decision).
if #KEYS == 1 then return decide(KEYS[1], tonumber(ARGV[3])) end
local out = {}
for i = 1, #KEYS do
  local ok, res = pcall(decide, KEYS[i], tonumber(ARGV[i + 2]))
  if ok then
    out[i] = res
  else
    if type(res) == 'table' then res = res.err or res.message or 'script error' end
    out[i] = 'E ' .. string.gsub(tostring(res), '\n', ' ')
  end
end
return table.concat(out, '\n')
