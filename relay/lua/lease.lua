-- lease.lua: take, renew or give back a lease held by one named owner.
--
-- KEYS[1]  the lease key (Keys.lease(name)); its value is the owner's name
-- ARGV[1]  owner name
-- ARGV[2]  time to live in ms; 0 gives the lease back
--
-- Changes: a free lease (no key) is taken (SET PX); a lease the owner holds is renewed
-- (PEXPIRE) or, with ttl 0, deleted. A lease held by someone else is left alone.
-- Returns 1 when the owner holds the lease afterwards (or gave it back), else 0.

local holder = redis.call("GET", KEYS[1])
local ttl = tonumber(ARGV[2])
if holder == ARGV[1] then
  if ttl > 0 then
    redis.call("PEXPIRE", KEYS[1], ttl)
  else
    redis.call("DEL", KEYS[1])
  end
  return 1
end
if not holder and ttl > 0 then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ttl)
  return 1
end
return 0
