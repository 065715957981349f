-- transition.lua: move messages to a new state, once, and record the change.
--
-- KEYS[1]      counts hash (state -> number of messages)
-- KEYS[2]      events stream
-- KEYS[3]      index to ZADD each changed id to (score = now); KEYS[2] again for none
-- KEYS[4]      index to ZREM each changed id from; KEYS[2] again for none
--              (a real key of relay's, not "": Redis ACL key patterns must allow every key)
-- KEYS[5..n-1] message hashes, one per id in ARGV[13..]
-- KEYS[n]      (the last) history hash of the minute of ARGV[3]: state -> changes into it
-- ARGV[1]      new state
-- ARGV[2]      allowed current states, comma separated (relay.states.ALLOWED_FROM decides
--              them; this script knows no state by name)
-- ARGV[3]      now (ms)
-- ARGV[4]      1 if the new state is final (record then expires), else 0
-- ARGV[5]      events stream MAXLEN (approximate)
-- ARGV[6]      record TTL (s) applied when final
-- ARGV[7]      JSON object of fields set on every changed message ({} for none)
-- ARGV[8]      JSON array (one object per id) of per-message fields, or "" for none
-- ARGV[9]      1 to leave alone a record whose final flag is 1, else 0
-- ARGV[10]     time field set instead of t_<new state> on a return to that state ("": none)
-- ARGV[11]     the one current state a move is a first arrival from (others are returns)
-- ARGV[12]     a deadline field: only messages on the deadlines zset (KEYS[4] then) whose
--              field is not after ARGV[3] move ("": no such condition); when that zset
--              does not exist nothing changes at once
-- ARGV[13..]   message ids
--
-- Changes: each message whose state is allowed gets state, final (set to 1, or removed: 0
-- is the default a reader assumes), its time field = now and the fields; counts move; one
-- event per change on the stream (sim and urgent 0 when the record leaves them out); the
-- minute's history hash counts the changes into the new state (expires 25 h after its last
-- change). A message missing or in another state is left alone. Returns, per id, 1 if it
-- changed else 0.

local to, now, final = ARGV[1], ARGV[3], ARGV[4]
local allowed = {}
for s in string.gmatch(ARGV[2], "[^,]+") do allowed[s] = true end
local common = cjson.decode(ARGV[7])
local each = nil
if ARGV[8] ~= "" then each = cjson.decode(ARGV[8]) end
local open_only, again, first_from = ARGV[9] == "1", ARGV[10], ARGV[11]
local due_field = ARGV[12]
if due_field ~= "" and redis.call("EXISTS", KEYS[4]) == 0 then
  local none = {}
  for _ = 5, #KEYS - 1 do none[#none + 1] = 0 end
  return none
end
local stamp = "t_" .. to
local event_fields = {"device_id", "sim", "customerid", "sms_id", "status", "statustitle", "error", "urgent"}
local event_defaults = {sim = "0", urgent = "0"}

local history, moved = KEYS[#KEYS], 0
local result = {}
for i = 5, #KEYS - 1 do
  local key, id = KEYS[i], ARGV[i + 8]
  local head = redis.call("HMGET", key, "state", "final")
  local cur, was_final = head[1], head[2] == "1"
  local ok = cur and allowed[cur] == true
  if ok and open_only then ok = not was_final end
  if ok and due_field ~= "" then
    local due = redis.call("HGET", key, due_field)
    ok = due ~= false and tonumber(due) <= tonumber(now) and redis.call("ZSCORE", KEYS[4], id) ~= false
  end
  if ok then
    local field = stamp
    if again ~= "" and cur ~= first_from then field = again end
    local set = {"state", to, field, now}
    if final == "1" then set[#set + 1] = "final"; set[#set + 1] = "1" end
    for f, v in pairs(common) do set[#set + 1] = f; set[#set + 1] = tostring(v) end
    if each and each[i - 4] then
      for f, v in pairs(each[i - 4]) do set[#set + 1] = f; set[#set + 1] = tostring(v) end
    end
    redis.call("HSET", key, unpack(set))
    if final ~= "1" and was_final then redis.call("HDEL", key, "final") end
    if cur ~= to then
      redis.call("HINCRBY", KEYS[1], cur, -1)
      redis.call("HINCRBY", KEYS[1], to, 1)
      moved = moved + 1
    end
    if KEYS[3] ~= KEYS[2] then redis.call("ZADD", KEYS[3], now, id) end
    if KEYS[4] ~= KEYS[2] then redis.call("ZREM", KEYS[4], id) end
    local ev = {"id", id, "state", to, "prev", cur, "final", final, "at", now}
    local vals = redis.call("HMGET", key, unpack(event_fields))
    for j, f in ipairs(event_fields) do
      local v = vals[j] or event_defaults[f]
      if v and v ~= "" then
        ev[#ev + 1] = f
        ev[#ev + 1] = v
      end
    end
    redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[5], "*", unpack(ev))
    if final == "1" then redis.call("EXPIRE", key, ARGV[6]) end
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
end
if moved > 0 then
  redis.call("HINCRBY", history, to, moved)
  redis.call("EXPIRE", history, 90000)
end
return result
