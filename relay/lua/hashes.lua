-- hashes.lua: read whole message records in one round trip.
--
-- KEYS[1..n]   message hashes (Keys.msg(id))
-- ARGV         none
--
-- Changes nothing. Returns ONE string: the JSON array of n objects, field -> value, in
-- KEYS order ({} for a missing record). One bulk reply that the client decodes with
-- json.loads, instead of n HGETALL answers parsed item by item. Callers send at most a
-- thousand keys per call, so Redis is never held long.

local rows = {}
for i = 1, #KEYS do
  local flat = redis.call("HGETALL", KEYS[i])
  local record = {}
  for j = 1, #flat, 2 do record[flat[j]] = flat[j + 1] end
  rows[i] = record
end
return cjson.encode(rows)
