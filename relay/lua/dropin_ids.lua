-- dropin_ids.lua: give freshly stored drop-in messages their integer ids (the sms_id the
-- SMSGateway24-compatible front answers), consecutive and never reused, and index them.
--
-- KEYS[1]      dropin:seq string (last integer id issued)
-- KEYS[2]      dropin:ids hash (integer id -> relay message id)
-- KEYS[3]      dropin:devices set (devices with an index)
-- then 2 keys per message i (base b = 3 + 2*(i-1)):
-- KEYS[b+1]    message hash m:<id>
-- KEYS[b+2]    dropin:dev:<dev> zset of that message's device ("<int>:<id>" -> created ms)
-- ARGV[3*(i-1)+1 .. 3*i]   message i: relay id, device id, created ms
--
-- Changes: INCRBY dropin:seq by the number of messages; message i gets id first+i-1:
-- HSET dropin:ids, HSET dropin_id on its record (only if the record exists), ZADD to its
-- device's index, SADD the device to dropin:devices. Returns the first integer id.

local n = (#KEYS - 3) / 2
local last = redis.call("INCRBY", KEYS[1], n)
local first = last - n + 1
for i = 1, n do
  local b, a = 3 + 2 * (i - 1), 3 * (i - 1)
  local id, dev, created = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local num = string.format("%d", first + i - 1)
  redis.call("HSET", KEYS[2], num, id)
  if redis.call("EXISTS", KEYS[b + 1]) == 1 then redis.call("HSET", KEYS[b + 1], "dropin_id", num) end
  redis.call("ZADD", KEYS[b + 2], created, num .. ":" .. id)
  redis.call("SADD", KEYS[3], dev)
end
return first
