-- records.lua: read the same fields of many message records in one round trip.
--
-- KEYS[1..n]   message hashes (Keys.msg(id))
-- ARGV[1..m]   field names; "body" reads the whole body, its chunks (body, body1, body2,
--              ...) joined in order
--
-- Changes nothing. Returns ONE string: the JSON array of n arrays of m values (null for
-- a missing field or record), in KEYS order. One bulk reply that the client decodes with
-- json.loads, instead of n*m RESP items parsed one by one.

local rows = {}
for i = 1, #KEYS do
  local vals = redis.call("HMGET", KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do
    if ARGV[j] == "body" and vals[j] then
      local parts, n = {vals[j]}, 1
      while true do
        local part = redis.call("HGET", KEYS[i], "body" .. n)
        if not part then break end
        parts[#parts + 1] = part
        n = n + 1
      end
      vals[j] = table.concat(parts)
    end
    if not vals[j] then vals[j] = cjson.null end
  end
  rows[i] = vals
end
return cjson.encode(rows)
