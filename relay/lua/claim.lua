-- claim.lua: claim one batch of a device/SIM — every urgent id first, then bulk ids within
-- the GCRA pacing allowance — record it as in flight, and keep the ticket's bookkeeping.
-- Atomic across any number of workers.
--
-- KEYS[1]   lane:u:<dev>:<sim>   urgent lane (list of ids, head first)
-- KEYS[2]   lane:b:<dev>:<sim>   bulk lane
-- KEYS[3]   pace:<dev>:<sim>     hash: tat (ms, GCRA theoretical arrival time),
--                                cap (optional: batch size limit while bisecting a refusal)
-- KEYS[4]   inflight             zset batch id -> claim ms
-- KEYS[5]   batch:<bid>          hash written for the new batch
-- KEYS[6]   ticket:<kind>:<dev>:<sim>  the running ticket's own key
-- KEYS[7]   timers               zset "kind:dev:sim" -> ms the ticket may run again
-- KEYS[8]   progress:<kind>:<dev>:<sim>  this lane's progress key (set to the job id)
-- ARGV[1]   now (ms)
-- ARGV[2]   batch_max
-- ARGV[3]   interval between two messages (ms; 0 = unlimited)
-- ARGV[4]   burst (messages that may go at once)
-- ARGV[5]   batch id
-- ARGV[6]   worker name
-- ARGV[7]   ticket kind: "u" or "b"
-- ARGV[8]   timer member of this ticket ("kind:dev:sim")
-- ARGV[9]   RQ job id of the running ticket
-- ARGV[10]  device id
-- ARGV[11]  sim
-- ARGV[12]  ttl of the progress key (ms): one run's bound
--
-- Pacing: urgent ids always go (up to the batch size) and use up allowance: tat advances
-- by one interval each and may run ahead of now, so bulk yields to them. Then with
-- tat' = max(tat, now), bulk may take n = floor((now + burst*interval - tat') / interval)
-- ids (all that fit when the interval is 0), and tat advances one interval per id.
--
-- Batch: when ids were taken, HSET batch:<bid> dev, sim, kind, ids (comma-joined),
-- claimed, worker and ZADD inflight claimed <bid>.
--
-- Ticket: the ticket key holds the running job's id. A missing key is adopted (SET to the
-- job id). A key naming another job means this run is a stale duplicate: it may claim,
-- but leaves the key and timers alone (verdict "stale"). Otherwise: a "u" ticket DELetes
-- its key when the urgent lane is empty ("released"), else "more". A "b" ticket (which
-- also serves urgent ids first) DELetes its key when the bulk lane is empty ("released");
-- when bulk remains blocked only by pacing, it ZADDs its member to timers at the moment
-- the next batch may go and SETs the key to "timer" ("timer"); else "more".
--
-- Progress: every claim, stale or not, SETs the progress key to the job id with PX ARGV[12]:
-- the lane moves. The sweep re-arms a lane whose key expired while its oldest message waits.
--
-- Returns {ids, number of urgent ids (the first ones), next free ms, verdict, cap used (0: none)}.

local now = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local kind, member, job = ARGV[7], ARGV[8], ARGV[9]

local cap = tonumber(redis.call("HGET", KEYS[3], "cap") or "0") or 0
if cap > 0 and cap < max then max = cap else cap = 0 end

local function take(lane, n)
  if n <= 0 then return {} end
  local ids = redis.call("LRANGE", lane, 0, n - 1)
  if #ids > 0 then redis.call("LTRIM", lane, #ids, -1) end
  return ids
end

-- urgent: all at once
local ids = take(KEYS[1], max)
local n_urgent = #ids
local tat = tonumber(redis.call("HGET", KEYS[3], "tat") or "0") or 0
if tat < now then tat = now end
if interval > 0 then tat = tat + n_urgent * interval end

-- bulk: within the allowance
local room = max - n_urgent
local allowed = room
if interval > 0 then
  allowed = math.floor((now + burst * interval - tat) / interval)
  if allowed < 0 then allowed = 0 end
  if allowed > room then allowed = room end
end
local bulk = take(KEYS[2], allowed)
for _, id in ipairs(bulk) do ids[#ids + 1] = id end
if interval > 0 then
  tat = tat + #bulk * interval
  if #ids > 0 then redis.call("HSET", KEYS[3], "tat", string.format("%.0f", tat)) end
end

if #ids > 0 then
  redis.call("HSET", KEYS[5], "dev", ARGV[10], "sim", ARGV[11], "kind", kind,
    "ids", table.concat(ids, ","), "claimed", ARGV[1], "worker", ARGV[6])
  redis.call("ZADD", KEYS[4], ARGV[1], ARGV[5])
end

-- the moment the next bulk batch may go: when the allowance covers min(burst, what waits)
local u_left = redis.call("LLEN", KEYS[1])
local b_left = redis.call("LLEN", KEYS[2])
local next_free = now
if interval > 0 and b_left > 0 then
  local want = math.min(burst, b_left, max)
  next_free = tat - (burst - want) * interval
  if next_free < now then next_free = now end
end

redis.call("SET", KEYS[8], job, "PX", ARGV[12])

local holder = redis.call("GET", KEYS[6])
local verdict
if holder and holder ~= job then
  verdict = "stale"
elseif (kind == "u" and u_left == 0) or (kind ~= "u" and b_left == 0) then
  if holder then redis.call("DEL", KEYS[6]) end
  verdict = "released"
elseif kind ~= "u" and u_left == 0 and next_free > now then
  redis.call("ZADD", KEYS[7], string.format("%.0f", next_free), member)
  redis.call("SET", KEYS[6], "timer")
  verdict = "timer"
else
  if not holder then redis.call("SET", KEYS[6], job) end
  verdict = "more"
end

return {ids, n_urgent, math.floor(next_free), verdict, cap}
