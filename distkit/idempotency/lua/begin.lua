-- Claim KEYS[1] for ARGV[1] (token) unless a result is stored or a live run holds it.
-- ARGV: token, payload_hash, in_progress_ttl_ms, record_ttl_ms
-- Returns {'claimed'} | {'reclaimed'} | {'completed', hash, result, pttl_ms} | {'in_progress', hash, age_ms}
-- Safe to resend: a claim already held by this token answers 'claimed' again (a reply lost in flight).
local rec = redis.call('HMGET', KEYS[1], 's', 'started', 'h', 'r', 'tok')
if rec[1] == 'C' then  -- a duplicate: answered before reading the clock
  return {'completed', rec[3], rec[4], redis.call('PTTL', KEYS[1])}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not rec[1] then
  redis.call('HSET', KEYS[1], 's', 'P', 'tok', ARGV[1], 'started', now, 'h', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'claimed'}
end
if rec[5] == ARGV[1] then return {'claimed'} end
local age = now - tonumber(rec[2])
if age >= tonumber(ARGV[3]) and rec[3] == ARGV[2] then
  -- the owner is presumed dead: exactly one caller takes over (this script is atomic)
  redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'started', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'reclaimed'}
end
return {'in_progress', rec[3], tostring(age)}
