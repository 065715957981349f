-- requeue.lua: put messages back at the head of their device/SIM's lanes, in the given
-- order; give back the pacing they used; arm the lanes' tickets. Runs in the same MULTI as
-- the transition of those messages to queued (relay.lanes.put_back).
--
-- KEYS[1]    lane:u:<dev>:<sim>   urgent lane
-- KEYS[2]    lane:b:<dev>:<sim>   bulk lane
-- KEYS[3]    ticket:u:<dev>:<sim>
-- KEYS[4]    ticket:b:<dev>:<sim>
-- KEYS[5]    pace:<dev>:<sim>     hash with tat (ms)
-- KEYS[6..]  message hashes m:<id>, one per id in ARGV[5..]
-- ARGV[1]    batch id: only messages whose `batch` field names it are put back ("": any)
-- ARGV[2]    RQ job id for the urgent ticket, SET NX when urgent ids go back
-- ARGV[3]    RQ job id for the bulk ticket, SET NX when bulk ids go back
-- ARGV[4]    pacing interval (ms) to give back per id put back (0: none)
-- ARGV[5..]  message ids, in order
--
-- Changes: each message in state `queued` (and of batch ARGV[1], when given) is LPUSHed
-- onto its lane (urgent=1: urgent lane) so the lane's head reads in the given order again;
-- each lane that got ids has its ticket SET NX; tat goes down by ARGV[4] per id put back
-- (the gateway stored none of them, so they used no pacing).
-- Returns {urgent ids pushed, bulk ids pushed, urgent ticket set 0/1, bulk ticket set 0/1}.

local lanes = {{}, {}}
for i = 6, #KEYS do
  local id = ARGV[i - 1]
  local vals = redis.call("HMGET", KEYS[i], "state", "batch", "urgent")
  if vals[1] == "queued" and (ARGV[1] == "" or vals[2] == ARGV[1]) then
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
  local tat = tonumber(redis.call("HGET", KEYS[5], "tat") or "0") or 0
  if tat > 0 then redis.call("HSET", KEYS[5], "tat", string.format("%.0f", tat - refund)) end
end
return result
