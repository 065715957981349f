-- handoff.lua: a ticket changes hands — from the job that holds it to a fresh job, or onto a
-- timer — only if it is still held by the expected value (compare and set).
--
-- KEYS[1]  ticket:<kind>:<dev>:<sim>
-- KEYS[2]  timers   zset "kind:dev:sim" -> ms the ticket may run again
-- ARGV[1]  the value the ticket must hold now (the running job id, or a job id the sweep
--          found dead); a missing key also matches when ARGV[4] is "1"
-- ARGV[2]  the new value: a fresh RQ job id, or "timer"
-- ARGV[3]  for "timer": ms the ticket may run again (ZADD timers ARGV[3] ARGV[5]); else ""
-- ARGV[4]  "1" to take a missing key as matching, else "0"
-- ARGV[5]  timer member ("kind:dev:sim")
--
-- Changes: the ticket key is SET to ARGV[2] (and the member put on timers, or taken off
-- them for a job) when it matched. Returns 1 when it matched, else 0.

local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] or ((not holder) and ARGV[4] == "1") then
  redis.call("SET", KEYS[1], ARGV[2])
  if ARGV[3] ~= "" then
    redis.call("ZADD", KEYS[2], ARGV[3], ARGV[5])
  else
    redis.call("ZREM", KEYS[2], ARGV[5])
  end
  return 1
end
return 0
