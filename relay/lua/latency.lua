-- latency.lua: record how long urgent messages took from queued to stored at the gateway,
-- for the dashboard's p50/p99 (relay.results.history, GET /v1/history).
--
-- KEYS[1]      latency list of the minute ARGV[1] falls in (Keys.latency)
-- KEYS[2..]    message hashes of the urgent messages the gateway stored
-- ARGV[1]      when the gateway stored them (ms)
-- ARGV[2]      most samples the list keeps (the newest)
-- ARGV[3]      the list's TTL (s)
-- ARGV[4..]    per message of KEYS[2..]: its creation time (ms, the time in its id), which
--              is when it was queued unless its record says t_queued (a scheduled message)
--
-- Changes: RPUSH of ARGV[1] - queued (ms, at least 0) for each message whose record exists;
-- LTRIM to the newest ARGV[2]; EXPIRE. Returns the number of samples added.

local stored, added = tonumber(ARGV[1]), 0
for i = 2, #KEYS do
  local rec = redis.call("HMGET", KEYS[i], "state", "t_queued")
  local queued = tonumber(rec[2]) or tonumber(ARGV[i + 2])
  if rec[1] and queued then
    redis.call("RPUSH", KEYS[1], math.max(0, stored - queued))
    added = added + 1
  end
end
if added > 0 then
  redis.call("LTRIM", KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call("EXPIRE", KEYS[1], ARGV[3])
end
return added
