-- enqueue.lua: store a chunk of validated messages, put each on its lane or schedule,
-- and arm each touched lane's dispatch ticket, atomically (one round trip per chunk).
--
-- KEYS[1]      counts hash (state -> number of messages)
-- KEYS[2]      events stream
-- KEYS[3]      lanes set (device/SIM members "dev:sim" ever used)
-- KEYS[4]      sched-due zset (lane member "kind:dev:sim" -> earliest due ms)
-- then 4 keys per message i (base b = 4 + 4*(i-1)):
-- KEYS[b+1]    message hash m:<id>
-- KEYS[b+2]    lane list (queued) or schedule zset (scheduled) of its device/SIM and kind
-- KEYS[b+3]    ticket key of that lane; when the message is scheduled, its message hash
--              again (unused: every KEYS entry is a real key of relay's, so Redis ACL key
--              patterns such as ~<prefix>:* allow the call)
-- KEYS[b+4]    idempotency key idem:<key>; without a key, the message hash again (unused)
-- ARGV[1]      now (ms)
-- ARGV[2]      events stream MAXLEN (approximate)
-- ARGV[3]      idempotency key TTL (s)
-- ARGV[3+i]    message i: 12 values joined by "\31" (unit separator, which validation
--              keeps out of every field): id, sendto, body, device_id, sim, urgent (0/1),
--              customerid or "", due ms or "" (queued now), key or "", RQ job id of the
--              lane's ticket or "" (scheduled), its lane's member ("kind:dev:sim"), its
--              device/SIM member ("dev:sim")
--
-- Changes: first, if the record of any id already exists, nothing at all and returns
-- {0, {positions of those ids}} so the caller makes new ids. Otherwise, per message: when
-- its idempotency key is already set (by an earlier call, or an earlier message of this
-- chunk) nothing, and its result is the id stored under the key; else SET the key NX EX,
-- HSET the record (non-empty fields; state queued|scheduled, final 0, t_<state>, attempts 0),
-- RPUSH the id to its lane (then SET the ticket NX to the job id) or ZADD it to the
-- schedule with its due ms (and lower the sched-due score of its lane member to it), SADD
-- its device/SIM member to lanes, HINCRBY counts, one XADD event like transition.lua's
-- (id, state, prev "", final 0, at, device_id, sim, [customerid], urgent).
-- Returns, flat, {1, id per message..., positions whose ticket key this call set...}
-- (the first n values after the 1 are the ids).

local now, maxlen, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local n = (#KEYS - 4) / 4

local taken = {}
for i = 1, n do
  if redis.call("EXISTS", KEYS[4 + 4 * (i - 1) + 1]) == 1 then taken[#taken + 1] = i end
end
if #taken > 0 then return {0, taken} end

local function fields(packed)
  local out, pos = {}, 1
  for _ = 1, 11 do
    local sep = string.find(packed, "\31", pos, true)
    out[#out + 1] = string.sub(packed, pos, sep - 1)
    pos = sep + 1
  end
  out[12] = string.sub(packed, pos)
  return out
end

local function schedule(sched, id, due, member)
  redis.call("ZADD", sched, due, id)
  local cur = redis.call("ZSCORE", KEYS[4], member)
  if not cur or tonumber(due) < tonumber(cur) then redis.call("ZADD", KEYS[4], due, member) end
end

local out, armed = {1}, {}
for i = 1, n do
  local b, f = 4 + 4 * (i - 1), fields(ARGV[3 + i])
  local id, sendto, body, dev, sim = f[1], f[2], f[3], f[4], f[5]
  local urgent, cid, due, key, job, member, pair = f[6], f[7], f[8], f[9], f[10], f[11], f[12]
  local known = nil
  if key ~= "" and not redis.call("SET", KEYS[b + 4], id, "NX", "EX", idem_ttl) then
    known = redis.call("GET", KEYS[b + 4])
  end
  if known then
    out[i + 1] = known
  else
    out[i + 1] = id
    local state = "queued"
    if due ~= "" then state = "scheduled" end
    local rec = {"sendto", sendto, "body", body, "device_id", dev, "sim", sim, "urgent", urgent,
                 "state", state, "final", "0", "t_" .. state, now, "attempts", "0"}
    if cid ~= "" then rec[#rec + 1] = "customerid"; rec[#rec + 1] = cid end
    if due ~= "" then rec[#rec + 1] = "timetosend"; rec[#rec + 1] = due end
    if key ~= "" then rec[#rec + 1] = "key"; rec[#rec + 1] = key end
    redis.call("HSET", KEYS[b + 1], unpack(rec))
    if due == "" then
      redis.call("RPUSH", KEYS[b + 2], id)
      if redis.call("SET", KEYS[b + 3], job, "NX") then armed[#armed + 1] = i end
    else
      schedule(KEYS[b + 2], id, due, member)
    end
    redis.call("SADD", KEYS[3], pair)
    redis.call("HINCRBY", KEYS[1], state, 1)
    local ev = {"id", id, "state", state, "prev", "", "final", "0", "at", now, "device_id", dev, "sim", sim}
    if cid ~= "" then ev[#ev + 1] = "customerid"; ev[#ev + 1] = cid end
    ev[#ev + 1] = "urgent"; ev[#ev + 1] = urgent
    redis.call("XADD", KEYS[2], "MAXLEN", "~", maxlen, "*", unpack(ev))
  end
end
for _, pos in ipairs(armed) do out[#out + 1] = pos end
return out
