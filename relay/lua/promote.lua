-- promote.lua: move due scheduled messages of one lane from its schedule to the lane's
-- tail, keep sched-due truthful, and arm the lane's dispatch ticket.
--
-- KEYS[1]      sched-due zset ("kind:dev:sim" -> earliest due ms)
-- KEYS[2]      schedule zset of the lane (id -> due ms)
-- KEYS[3]      lane list
-- KEYS[4]      ticket key of the lane
-- ARGV[1]      now (ms)
-- ARGV[2]      the lane's sched-due member "kind:dev:sim"
-- ARGV[3]      RQ job id to set the ticket key to (NX)
-- ARGV[4..]    ids the caller read as due, in due order
--
-- Changes: each given id still in the schedule with a due time <= now is removed from it
-- and RPUSHed to the lane, in the given order (an id another promoter or a cancel took
-- first is skipped). The member's sched-due score becomes the schedule's earliest due
-- time, or the member is removed when the schedule is empty. When at least one id moved,
-- the ticket key is SET NX to the job id.
-- Returns {number of ids moved, 1 if this call set the ticket key else 0}.
-- The caller runs transition.lua (scheduled -> queued) for the same ids in the same
-- MULTI, so a moved id is never in a lane while still "scheduled".

local now = tonumber(ARGV[1])
local moved = {}
for i = 4, #ARGV do
  local due = redis.call("ZSCORE", KEYS[2], ARGV[i])
  if due and tonumber(due) <= now then
    redis.call("ZREM", KEYS[2], ARGV[i])
    moved[#moved + 1] = ARGV[i]
  end
end
if #moved > 0 then redis.call("RPUSH", KEYS[3], unpack(moved)) end

local first = redis.call("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
if #first > 0 then
  redis.call("ZADD", KEYS[1], first[2], ARGV[2])
else
  redis.call("ZREM", KEYS[1], ARGV[2])
end

local armed = 0
if #moved > 0 and redis.call("SET", KEYS[4], ARGV[3], "NX") then armed = 1 end
return {#moved, armed}
