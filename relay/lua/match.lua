-- match.lua: record that gateway records are relay messages (sms_id, status), once.
--
-- KEYS[1]      sms index hash of the device (sms_id -> message id)
-- KEYS[2..]    message hashes, one per entry of ARGV[2..] (in groups of 4)
-- ARGV[1]      states a message may be in, comma separated
-- ARGV[2..]    groups of: message id, sms_id, status code, status title
--
-- Changes: for each group whose message exists in an allowed state, whose sms_id is not
-- indexed to another message and whose record holds no other sms_id: HSET the index
-- entry and the message's sms_id, status and statustitle (no state change, no event: a
-- state change goes through transition.lua). Returns, per group, 1 if recorded else 0.

local allowed = {}
for s in string.gmatch(ARGV[1], "[^,]+") do allowed[s] = true end
local result = {}
for i = 2, #KEYS do
  local base = 2 + (i - 2) * 4
  local id, sms_id, status, title = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local key = KEYS[i]
  local ok = 0
  local state = redis.call("HGET", key, "state")
  if state and allowed[state] then
    local owner = redis.call("HGET", KEYS[1], sms_id)
    local own = redis.call("HGET", key, "sms_id")
    if (not owner or owner == id) and (not own or own == "" or own == sms_id) then
      redis.call("HSET", KEYS[1], sms_id, id)
      redis.call("HSET", key, "sms_id", sms_id, "status", status, "statustitle", title)
      ok = 1
    end
  end
  result[#result + 1] = ok
end
return result
