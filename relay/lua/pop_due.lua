-- pop_due.lua: take due tickets off the timers and hand each a fresh RQ job id, atomically
-- (so two schedulers never both enqueue the same ticket, and no crash leaves a ticket
-- neither on a timer nor naming a job). The caller read the due members first
-- (ZRANGEBYSCORE timers -inf now) and enqueues a job for every member this returns.
--
-- KEYS[1]      timers   zset "kind:dev:sim" -> ms the ticket may run again
-- KEYS[1+i]    ticket:<kind>:<dev>:<sim> of member i
-- ARGV[1]      now (ms)
-- ARGV[2]      n, the number of members
-- ARGV[2+i]    member i ("kind:dev:sim")
-- ARGV[2+n+i]  fresh RQ job id for member i
--
-- Changes: each member still on timers with a score <= now is ZREMed; its ticket key is
-- SET to the new job id when it holds "timer" (or is missing); a ticket key naming a job
-- is left alone (someone re-armed it already). Returns the positions i that got a job.

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local armed = {}
for i = 1, n do
  local member = ARGV[2 + i]
  local score = redis.call("ZSCORE", KEYS[1], member)
  if score and tonumber(score) <= now then
    redis.call("ZREM", KEYS[1], member)
    local holder = redis.call("GET", KEYS[1 + i])
    if (not holder) or holder == "timer" then
      redis.call("SET", KEYS[1 + i], ARGV[2 + n + i])
      armed[#armed + 1] = i
    end
  end
end
return armed
