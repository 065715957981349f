-- requeue.lua: put a batch (or part of one) the gateway did not store back at the head of
-- its lanes, in batch order; drop the batch record; give back the pacing it used; arm the
-- lanes' tickets. Runs in the same MULTI as the transition submitting -> queued.
--
-- KEYS[1]    lane:u:<dev>:<sim>   urgent lane
-- KEYS[2]    lane:b:<dev>:<sim>   bulk lane
-- KEYS[3]    ticket:u:<dev>:<sim>
-- KEYS[4]    ticket:b:<dev>:<sim>
-- KEYS[5]    inflight             zset batch id -> claim ms
-- KEYS[6]    batch:<bid>          the batch record
-- KEYS[7]    pace:<dev>:<sim>     hash with tat (ms)
-- KEYS[8..]  message hashes m:<id>, one per id in ARGV[6..]
-- ARGV[1]    batch id: only messages whose `batch` field names it are put back
-- ARGV[2]    RQ job id for the urgent ticket, SET NX when urgent ids go back
-- ARGV[3]    RQ job id for the bulk ticket, SET NX when bulk ids go back
-- ARGV[4]    pacing interval (ms) to give back per id put back (0: none)
-- ARGV[5]    1 to drop the batch record (ZREM inflight, DEL batch), 0 to keep it
-- ARGV[6..]  message ids, in batch order
--
-- Changes: each message in state `queued` whose `batch` is ARGV[1] is LPUSHed onto its
-- lane (urgent=1: urgent lane) so the lane's head reads in batch order again; each lane
-- that got ids has its ticket SET NX; tat goes down by ARGV[4] per id put back (the
-- gateway stored none of them, so they used no pacing); the batch record goes (ARGV[5]).
-- Returns {urgent ids pushed, bulk ids pushed, urgent ticket set 0/1, bulk ticket set 0/1}.

local lanes = {{}, {}}
for i = 8, #KEYS do
  local id = ARGV[i - 2]
  local vals = redis.call("HMGET", KEYS[i], "state", "batch", "urgent")
  if vals[1] == "queued" and vals[2] == ARGV[1] then
    local which = 2
    if vals[3] == "1" then which = 1 end
    table.insert(lanes[which], id)
  end
end

local result = {#lanes[1], #lanes[2], 0, 0}
for which = 1, 2 do
  local ids = lanes[which]
  for j = #ids, 1, -1 do redis.call("LPUSH", KEYS[which], ids[j]) end
  if #ids > 0 and redis.call("SET", KEYS[which + 2], ARGV[which + 1], "NX") then
    result[which + 2] = 1
  end
end

local refund = (tonumber(ARGV[4]) or 0) * (#lanes[1] + #lanes[2])
if refund > 0 then
  local tat = tonumber(redis.call("HGET", KEYS[7], "tat") or "0") or 0
  if tat > 0 then redis.call("HSET", KEYS[7], "tat", string.format("%.0f", tat - refund)) end
end

if ARGV[5] == "1" then
  redis.call("ZREM", KEYS[5], ARGV[1])
  redis.call("DEL", KEYS[6])
end
return result
