-- enqueue.lua: store a chunk of validated messages, put each on its lane or schedule,
-- and arm each touched lane's dispatch ticket, atomically (one round trip per chunk).
--
-- KEYS[1]      counts hash (state -> number of messages)
-- KEYS[2]      events stream
-- KEYS[3]      lanes set (device/SIM members "dev:sim" ever used)
-- KEYS[4]      sched-due zset (lane member "kind:dev:sim" -> earliest due ms)
-- KEYS[5]      deadlines zset (id -> ttl deadline ms)
-- then 4 keys per message i (base b = 5 + 4*(i-1)):
-- KEYS[b+1]    message hash m:<id>
-- KEYS[b+2]    lane list (queued) or schedule zset (scheduled) of its device/SIM and kind
-- KEYS[b+3]    ticket key of that lane; when the message is scheduled, its message hash
--              again (unused: every KEYS entry is a real key of relay's, so Redis ACL key
--              patterns such as ~<prefix>:* allow the call)
-- KEYS[b+4]    idempotency key idem:<key>; without a key, the message hash again (unused)
-- ARGV[1]      now (ms)
-- ARGV[2]      events stream MAXLEN (approximate)
-- ARGV[3]      idempotency key TTL (s)
-- ARGV[4]      the state of a message queued now ("queued")
-- ARGV[5]      the state of a message due later ("scheduled")
-- ARGV[6]      body chunk size (bytes): a hash stays a compact listpack only while every
--              value is at most Redis's hash-max-listpack-value (64 by default)
-- ARGV[6+i]    message i: 13 values joined by "\31" (unit separator, which validation
--              keeps out of every field): id, sendto, body, device_id, sim, urgent (0/1),
--              customerid or "", due ms or "" (queued now), key or "", ttl deadline ms or
--              "" (none), RQ job id of the
--              lane's ticket or "" (scheduled), its lane's member ("kind:dev:sim"), its
--              device/SIM member ("dev:sim")
--
-- Changes: first, if the record of any id already exists, nothing at all and returns
-- {0, {positions of those ids}} so the caller makes new ids. Otherwise, per message: when
-- its idempotency key is already set (by an earlier call, or an earlier message of this
-- chunk) nothing, and its result is the id stored under the key; else SET the key NX EX,
-- HSET the record: sendto, the body in chunks of at most ARGV[6] bytes, each ending on a
-- whole UTF-8 character (body, body1, body2, ...), device_id, state, and only when they say something: sim (not 0), urgent (1),
-- customerid, timetosend, key, exp (the ttl deadline; the id then joins the deadlines
-- zset). Nothing derivable is stored: final 0, attempts 0 and the
-- creation time (the id says it) are the defaults a reader assumes;
-- RPUSH the id to its lane (then SET the ticket NX to the job id) or ZADD it to the
-- schedule with its due ms (and lower the sched-due score of its lane member to it), SADD
-- its device/SIM member to lanes, HINCRBY counts, one lean XADD event (id, state,
-- device_id, [sim], [customerid], [urgent]: prev is none, final 0 and at the id's time).
-- Returns, flat, {1, id per message..., positions whose ticket key this call set...}
-- (the first n values after the 1 are the ids).

local now, maxlen, idem_ttl = ARGV[1], ARGV[2], ARGV[3]
local queued_state, scheduled_state, chunk = ARGV[4], ARGV[5], tonumber(ARGV[6])
local n = (#KEYS - 5) / 4

local taken = {}
for i = 1, n do
  if redis.call("EXISTS", KEYS[5 + 4 * (i - 1) + 1]) == 1 then taken[#taken + 1] = i end
end
if #taken > 0 then return {0, taken} end

local function fields(packed)
  local out, pos = {}, 1
  for _ = 1, 12 do
    local sep = string.find(packed, "\31", pos, true)
    out[#out + 1] = string.sub(packed, pos, sep - 1)
    pos = sep + 1
  end
  out[13] = string.sub(packed, pos)
  return out
end

local function schedule(sched, id, due, member)
  redis.call("ZADD", sched, due, id)
  local cur = redis.call("ZSCORE", KEYS[4], member)
  if not cur or tonumber(due) < tonumber(cur) then redis.call("ZADD", KEYS[4], due, member) end
end

local out, armed = {1}, {}
for i = 1, n do
  local b, f = 5 + 4 * (i - 1), fields(ARGV[6 + i])
  local id, sendto, body, dev, sim = f[1], f[2], f[3], f[4], f[5]
  local urgent, cid, due, key, deadline = f[6], f[7], f[8], f[9], f[10]
  local job, member, pair = f[11], f[12], f[13]
  local known = nil
  if key ~= "" and not redis.call("SET", KEYS[b + 4], id, "NX", "EX", idem_ttl) then
    known = redis.call("GET", KEYS[b + 4])
  end
  if known then
    out[i + 1] = known
  else
    out[i + 1] = id
    local state = queued_state
    if due ~= "" then state = scheduled_state end
    local rec = {"sendto", sendto, "device_id", dev, "state", state}
    local part, pos = 0, 1
    while pos <= #body do
      local last = pos + chunk - 1
      -- never cut a UTF-8 character: back off while the next byte continues one
      while last < #body and last > pos do
        local byte = string.byte(body, last + 1)
        if byte < 128 or byte > 191 then break end
        last = last - 1
      end
      local name = "body"
      if part > 0 then name = "body" .. part end
      rec[#rec + 1] = name; rec[#rec + 1] = string.sub(body, pos, last)
      part, pos = part + 1, last + 1
    end
    if sim ~= "0" then rec[#rec + 1] = "sim"; rec[#rec + 1] = sim end
    if urgent == "1" then rec[#rec + 1] = "urgent"; rec[#rec + 1] = "1" end
    if cid ~= "" then rec[#rec + 1] = "customerid"; rec[#rec + 1] = cid end
    if due ~= "" then rec[#rec + 1] = "timetosend"; rec[#rec + 1] = due end
    if key ~= "" then rec[#rec + 1] = "key"; rec[#rec + 1] = key end
    if deadline ~= "" then
      rec[#rec + 1] = "exp"; rec[#rec + 1] = deadline
      redis.call("ZADD", KEYS[5], deadline, id)
    end
    redis.call("HSET", KEYS[b + 1], unpack(rec))
    if due == "" then
      redis.call("RPUSH", KEYS[b + 2], id)
      if redis.call("SET", KEYS[b + 3], job, "NX") then armed[#armed + 1] = i end
    else
      schedule(KEYS[b + 2], id, due, member)
    end
    redis.call("SADD", KEYS[3], pair)
    redis.call("HINCRBY", KEYS[1], state, 1)
    local ev = {"id", id, "state", state, "device_id", dev}
    if sim ~= "0" then ev[#ev + 1] = "sim"; ev[#ev + 1] = sim end
    if cid ~= "" then ev[#ev + 1] = "customerid"; ev[#ev + 1] = cid end
    if urgent == "1" then ev[#ev + 1] = "urgent"; ev[#ev + 1] = "1" end
    redis.call("XADD", KEYS[2], "MAXLEN", "~", maxlen, "*", unpack(ev))
  end
end
for _, pos in ipairs(armed) do out[#out + 1] = pos end
return out
