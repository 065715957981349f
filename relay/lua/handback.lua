-- handback.lua: an offline device hands the pooled messages waiting in its own lanes back
-- to the head of their pools' lanes, so another member takes them.
--
-- KEYS[1]   lane:u:<dev>:<sim>   the device/SIM's urgent lane
-- KEYS[2]   lane:b:<dev>:<sim>   its bulk lane
-- KEYS[3]   offline              set of the ids of the devices offline now
-- KEYS[4 .. 3+p]        lane:pu:<pool>  the urgent lanes of the p pools of this device/SIM
-- KEYS[4+p .. 3+2p]     lane:pb:<pool>  their bulk lanes, same order
-- KEYS[4+2p .. ]        m:<id>          the record of each id in ARGV[4+p ..], same order
-- ARGV[1]   device id
-- ARGV[2]   p: the number of pools
-- ARGV[3 .. 2+p]        the pools' names, same order as their lanes
-- ARGV[3+p]             u: the number of ids read from the urgent lane (the first ones)
-- ARGV[4+p .. ]         ids read from the head of the urgent lane, then of the bulk lane,
--                       each in lane order
--
-- Changes: nothing unless ARGV[1] is in KEYS[3]. Else each id whose record is `queued` and
-- has a `pool` among ARGV[3 .. 2+p] and that is still in the lane it was read from (LREM
-- of one: it is taken out) goes to the head of its pool's lane of the same kind, the ids
-- of one pool lane in the order they had; its record is reset as enqueue.lua leaves a
-- pooled record before a claim: device_id 0, no sim. Unpooled ids, ids no longer queued,
-- and ids of another pool stay where they are.
-- Returns {pool lane index (1-based over KEYS[4 .. 3+2p]), number of ids moved there} flat,
-- for each pool lane that got ids.

local p = tonumber(ARGV[2])
if redis.call("SISMEMBER", KEYS[3], ARGV[1]) == 0 then return {} end

local index = {}
for i = 1, p do index[ARGV[2 + i]] = i end
local n_urgent = tonumber(ARGV[3 + p])

local moved = {}
for j = 4 + p, #ARGV do
  local id, record = ARGV[j], KEYS[4 + 2 * p + (j - 4 - p)]
  local from, offset = 1, 0
  if j - 3 - p > n_urgent then from, offset = 2, p end
  local vals = redis.call("HMGET", record, "state", "pool")
  local at = vals[2] and index[vals[2]]
  if vals[1] == "queued" and at and redis.call("LREM", KEYS[from], 1, id) == 1 then
    local lane = at + offset
    moved[lane] = moved[lane] or {}
    table.insert(moved[lane], id)
    redis.call("HSET", record, "device_id", "0")
    redis.call("HDEL", record, "sim")
  end
end

local out = {}
for lane = 1, 2 * p do
  local ids = moved[lane]
  if ids then
    for k = #ids, 1, -1 do redis.call("LPUSH", KEYS[3 + lane], ids[k]) end
    out[#out + 1] = lane
    out[#out + 1] = #ids
  end
end
return out
