-- expire.lua: take messages whose ttl has passed out of the lane or schedule that holds
-- them. The caller runs transition.lua (-> expired, only messages still waiting whose
-- deadline has passed; it takes them off the deadlines zset) next in the same MULTI.
--
-- KEYS[1]      deadlines zset (id -> ttl deadline ms)
-- then 3 keys per id i (base b = 1 + 3*(i-1)):
-- KEYS[b+1]    message hash m:<id>
-- KEYS[b+2]    the lane list that holds it while queued
-- KEYS[b+3]    the schedule zset that holds it while scheduled
-- ARGV[1]      now (ms)
-- ARGV[2]      waiting states, comma separated (relay.states decides them)
-- ARGV[3]      states of a message being submitted, comma separated
-- ARGV[4]      when (ms) to look again at an id being submitted
-- ARGV[5..]    message ids
--
-- Changes: per id: in a waiting state with an exp (deadline) not after now, LREM from the
-- lane (from the tail) and ZREM from the schedule (it stays on deadlines for the
-- transition); being submitted, its deadlines score becomes ARGV[4]; otherwise (submitted,
-- final, gone) ZREM from deadlines. An id whose exp is later (or missing but the record alive in a waiting
-- state) keeps its deadlines score. A sched-due score left too early is corrected by the
-- next promote. Returns the number of ids taken out of a lane or schedule.

local function set_of(csv)
  local out = {}
  for s in string.gmatch(csv, "[^,]+") do out[s] = true end
  return out
end

local now, waiting, busy = tonumber(ARGV[1]), set_of(ARGV[2]), set_of(ARGV[3])
local taken = 0
for i = 5, #ARGV do
  local id, b = ARGV[i], 1 + 3 * (i - 5)
  local vals = redis.call("HMGET", KEYS[b + 1], "state", "exp")
  local state, exp = vals[1], tonumber(vals[2])
  if not state then
    redis.call("ZREM", KEYS[1], id)
  elseif waiting[state] then
    if exp and exp <= now then
      taken = taken + redis.call("LREM", KEYS[b + 2], -1, id) + redis.call("ZREM", KEYS[b + 3], id)
    end
  elseif busy[state] then
    redis.call("ZADD", KEYS[1], ARGV[4], id)
  else
    redis.call("ZREM", KEYS[1], id)
  end
end
return taken
