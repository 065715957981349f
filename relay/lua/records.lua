-- records.lua: read the same fields of many message records in one round trip.
--
-- KEYS[1..n]   message hashes (Keys.msg(id))
-- ARGV[1..m]   field names
--
-- Changes nothing. Returns one flat array of n*m values: value j of record i at
-- (i-1)*m + j (nil for a missing field or record). One reply instead of n HMGET replies:
-- the client parses one array, not n answers.

local out, m = {}, #ARGV
for i = 1, #KEYS do
  local vals = redis.call("HMGET", KEYS[i], unpack(ARGV))
  for j = 1, m do out[#out + 1] = vals[j] end
end
return out
