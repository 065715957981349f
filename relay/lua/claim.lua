-- claim.lua: claim one batch of a device/SIM — its own urgent ids, its pools' urgent ids,
-- then its own bulk ids and its pools' bulk ids within the GCRA pacing allowance — within
-- its quota windows and its online state; record it as in flight, give pooled ids this
-- device/SIM, and keep the ticket's bookkeeping. Atomic across any number of workers.
--
-- KEYS[1]   lane:u:<dev>:<sim>   urgent lane (list of ids, head first)
-- KEYS[2]   lane:b:<dev>:<sim>   bulk lane
-- KEYS[3]   pace:<dev>:<sim>     hash: tat (ms, GCRA theoretical arrival time),
--                                cap (optional: batch size limit while bisecting a refusal)
-- KEYS[4]   inflight             zset batch id -> claim ms
-- KEYS[5]   batch:<bid>          hash written for the new batch
-- KEYS[6]   ticket:<kind>:<dev>:<sim>  the running ticket's own key
-- KEYS[7]   timers               zset "kind:dev:sim" -> ms the ticket may run again
-- KEYS[8]   offline              set of the ids of the devices offline now
-- KEYS[9]   quota:<dev>:<sim>:h<n>  messages taken in this hour window
-- KEYS[10]  quota:<dev>:<sim>:d<n>  messages taken in this day window
-- KEYS[11]  progress:<kind>:<dev>:<sim>  this lane's progress key (set to the job id)
-- KEYS[12 .. 11+p]       lane:pu:<pool>  the urgent lanes of the p pools of this device/SIM
-- KEYS[12+p .. 11+2p]    lane:pb:<pool>  their bulk lanes, same order
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
-- ARGV[12]  p: the number of pools
-- ARGV[13]  "1": an offline device holds its own messages (RELAY_HOLD_OFFLINE), "0": sends
-- ARGV[14]  per-hour limit (0: none)
-- ARGV[15]  per-day limit (0: none)
-- ARGV[16]  "1": urgent ids pass a spent quota
-- ARGV[17]  end (ms) of the hour window of KEYS[9]
-- ARGV[18]  end (ms) of the day window of KEYS[10]
-- ARGV[19]  ms an offline device's ticket waits before it looks again
-- ARGV[20]  the prefix of message keys (Keys.msg("")): a pooled id's record is that .. id
-- ARGV[21]  ttl of the progress key (ms): one run's bound
--
-- Online: a device in KEYS[8] takes no pooled ids, and none of its own while ARGV[13] is 1
-- (they are held, never submitted).
-- Quota: room = the least of (limit - used) over the windows with a limit. Urgent ids take
-- up to room (all, with ARGV[16]); bulk ids up to what room is left. A window is spent
-- when used >= limit; the quota is back when every spent window has rolled. Every id taken is
-- counted: INCRBY of each limited window's key, PEXPIREAT its window's end plus a minute.
-- Pacing: urgent ids always go (up to the batch size) and use up allowance: tat advances
-- by one interval each and may run ahead of now, so bulk yields to them. Then with
-- tat' = max(tat, now), bulk may take n = floor((now + burst*interval - tat') / interval)
-- ids (all that fit when the interval is 0), and tat advances one interval per id.
--
-- Pooled ids: HSET device_id (and sim, when not 0) of this device/SIM in their records.
-- Batch: when ids were taken, HSET batch:<bid> dev, sim, kind, ids (comma-joined),
-- claimed, worker and ZADD inflight claimed <bid>.
--
-- Ticket: the ticket key holds the running job's id. A missing key is adopted (SET to the
-- job id). A key naming another job means this run is a stale duplicate: it may claim,
-- but leaves the key and timers alone (verdict "stale"). Otherwise, with "its ids" the ids
-- of its kind in its own lane and its pools' lanes: none left → DEL the key ("released");
-- else when it may take none of them now (offline: until now + ARGV[19]; quota spent:
-- until the spent window ends; a "b" ticket with no urgent id it may take and bulk blocked
-- only by pacing: until the next batch may go) ZADD its member to timers at that moment
-- and SET the key to "timer" ("timer"); else "more".
--
-- Progress: every claim, stale or not, SETs the progress key to the job id with PX ARGV[21]:
-- the lane moves. The sweep re-arms a lane whose key expired while its oldest message waits.
--
-- Returns {ids, number of urgent ids (the first ones), next free ms (or the timer's), verdict,
-- cap used (0: none)}.

local now = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local kind, member, job = ARGV[7], ARGV[8], ARGV[9]
local p = tonumber(ARGV[12])
local per_hour, per_day = tonumber(ARGV[14]), tonumber(ARGV[15])
local urgent_over = ARGV[16] == "1"

local cap = tonumber(redis.call("HGET", KEYS[3], "cap") or "0") or 0
if cap > 0 and cap < max then max = cap else cap = 0 end

local offline = redis.call("SISMEMBER", KEYS[8], ARGV[10]) == 1
local own_ok = not (offline and ARGV[13] == "1")
local pool_ok = not offline

-- quota: what the windows with a limit have room for after `extra` more ids, and when
-- every window spent by then has rolled (nil: none is spent)
local used_h, used_d = 0, 0
if per_hour > 0 then used_h = tonumber(redis.call("GET", KEYS[9]) or "0") end
if per_day > 0 then used_d = tonumber(redis.call("GET", KEYS[10]) or "0") end
local function room(extra)
  local r = max
  if per_hour > 0 and per_hour - used_h - extra < r then r = per_hour - used_h - extra end
  if per_day > 0 and per_day - used_d - extra < r then r = per_day - used_d - extra end
  if r < 0 then r = 0 end
  return r
end
local function reset(extra)
  local at = nil
  if per_hour > 0 and used_h + extra >= per_hour then at = tonumber(ARGV[17]) end
  if per_day > 0 and used_d + extra >= per_day then at = tonumber(ARGV[18]) end
  return at
end

local ids, pooled = {}, {}
local function take(lane, n, from_pool)
  if n <= 0 then return end
  local got = redis.call("LRANGE", lane, 0, n - 1)
  if #got == 0 then return end
  redis.call("LTRIM", lane, #got, -1)
  for _, id in ipairs(got) do
    ids[#ids + 1] = id
    if from_pool then pooled[#pooled + 1] = id end
  end
end
-- own lane (KEYS[own]) then the pools' lanes (KEYS[first] ...), up to n ids in all
local function take_kind(own, first, n)
  local start = #ids
  if own_ok then take(KEYS[own], n, false) end
  if pool_ok then
    for i = first, first + p - 1 do take(KEYS[i], n - (#ids - start), true) end
  end
  return #ids - start
end

-- urgent: all at once (within the quota unless urgent_over)
local u_max = max
if not urgent_over then u_max = room(0) end
local n_urgent = take_kind(1, 12, u_max)
local tat = tonumber(redis.call("HGET", KEYS[3], "tat") or "0") or 0
if tat < now then tat = now end
if interval > 0 then tat = tat + n_urgent * interval end

-- bulk: within the allowance and the quota
local allowed = max - n_urgent
if interval > 0 then
  local pace = math.floor((now + burst * interval - tat) / interval)
  if pace < 0 then pace = 0 end
  if pace < allowed then allowed = pace end
end
if room(n_urgent) < allowed then allowed = room(n_urgent) end
local n_bulk = take_kind(2, 12 + p, allowed)
if interval > 0 then
  tat = tat + n_bulk * interval
  if #ids > 0 then redis.call("HSET", KEYS[3], "tat", string.format("%.0f", tat)) end
end

if #ids > 0 then
  if per_hour > 0 then
    redis.call("INCRBY", KEYS[9], #ids)
    redis.call("PEXPIREAT", KEYS[9], tonumber(ARGV[17]) + 60000)
  end
  if per_day > 0 then
    redis.call("INCRBY", KEYS[10], #ids)
    redis.call("PEXPIREAT", KEYS[10], tonumber(ARGV[18]) + 60000)
  end
  for _, id in ipairs(pooled) do
    if ARGV[11] ~= "0" then
      redis.call("HSET", ARGV[20] .. id, "device_id", ARGV[10], "sim", ARGV[11])
    else
      redis.call("HSET", ARGV[20] .. id, "device_id", ARGV[10])
    end
  end
  redis.call("HSET", KEYS[5], "dev", ARGV[10], "sim", ARGV[11], "kind", kind,
    "ids", table.concat(ids, ","), "claimed", ARGV[1], "worker", ARGV[6])
  redis.call("ZADD", KEYS[4], ARGV[1], ARGV[5])
end

-- what is left of each kind: in all (own and pools'), and what this device may take
local function left(own, first)
  local own_n = redis.call("LLEN", KEYS[own])
  local pool_n = 0
  for i = first, first + p - 1 do pool_n = pool_n + redis.call("LLEN", KEYS[i]) end
  local open = 0
  if own_ok then open = open + own_n end
  if pool_ok then open = open + pool_n end
  return own_n + pool_n, open
end
local u_all, u_open = left(1, 12)
local b_all, b_open = left(2, 12 + p)

-- the moment the next bulk batch may go: when the allowance covers min(burst, what waits)
local next_free = now
if interval > 0 and b_open > 0 then
  local want = math.min(burst, b_open, max)
  next_free = tat - (burst - want) * interval
  if next_free < now then next_free = now end
end

local mine, open = b_all, b_open
if kind == "u" then mine, open = u_all, u_open end
local spent = reset(#ids)
local u_blocked = u_open == 0 or (spent and not urgent_over)
local wake = nil
if mine > 0 then
  if open == 0 then
    wake = now + tonumber(ARGV[19])
  elseif spent and (kind ~= "u" or not urgent_over) then
    wake = spent
  elseif kind ~= "u" and u_blocked and next_free > now then
    wake = next_free
  end
end

redis.call("SET", KEYS[11], job, "PX", ARGV[21])

local holder = redis.call("GET", KEYS[6])
local verdict
if holder and holder ~= job then
  verdict = "stale"
elseif mine == 0 then
  if holder then redis.call("DEL", KEYS[6]) end
  verdict = "released"
elseif wake then
  redis.call("ZADD", KEYS[7], string.format("%.0f", wake), member)
  redis.call("SET", KEYS[6], "timer")
  next_free = wake
  verdict = "timer"
else
  if not holder then redis.call("SET", KEYS[6], job) end
  verdict = "more"
end

return {ids, n_urgent, math.floor(next_free), verdict, cap}
