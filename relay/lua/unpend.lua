-- unpend.lua: messages leave the reconciler's pending set (final) or the urgent-waiting
-- set (sent); a device whose pending set is empty leaves the pending devices.
--
-- KEYS[1]    pending sorted set of the device (Keys.pending(dev))
-- KEYS[2]    pending devices set
-- KEYS[3]    urgent-waiting sorted set
-- ARGV[1]    device id
-- ARGV[2]    k: the first k ids of ARGV[3..] leave pending and urgent-waiting; the rest
--            leave urgent-waiting only
-- ARGV[3..]  message ids
--
-- Changes: ZREM as above; SREM ARGV[1] from KEYS[2] when KEYS[1] is then empty (checked
-- here, atomically, so a concurrent submission that adds to pending keeps its device).
-- Returns the number of messages that left pending.

local k = tonumber(ARGV[2])
local left = 0
for i = 3, #ARGV do
  if i - 2 <= k then
    left = left + redis.call("ZREM", KEYS[1], ARGV[i])
  end
  redis.call("ZREM", KEYS[3], ARGV[i])
end
if redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[1])
end
return left
