-- presence.lua: record which devices are offline after a device sync, and say so once.
--
-- KEYS[1]  offline   set of device ids (decimal) currently offline
-- KEYS[2]  events stream
-- ARGV[1]  events stream MAXLEN (approximate)
-- ARGV[2]  now (ms)
-- ARGV[3..] triples: device id, "1" online / "0" offline, lastseen (ms; "" unknown)
--
-- Changes: a device found offline that was not is added to the set, one found online that
-- was offline is removed; each change adds one event (event device.offline or
-- device.online, device_id, state offline/online, at, lastseen). Devices whose state did
-- not change are left alone. Returns {ids that came back online, ids that went offline}.

local back, gone = {}, {}
for i = 3, #ARGV, 3 do
  local dev, online, seen = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local changed, state
  if online == "1" then
    changed, state = redis.call("SREM", KEYS[1], dev), "online"
  else
    changed, state = redis.call("SADD", KEYS[1], dev), "offline"
  end
  if changed == 1 then
    local ev = {"event", "device." .. state, "device_id", dev, "state", state, "at", ARGV[2]}
    if seen ~= "" then
      ev[#ev + 1] = "lastseen"
      ev[#ev + 1] = seen
    end
    redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[1], "*", unpack(ev))
    if online == "1" then back[#back + 1] = dev else gone[#gone + 1] = dev end
  end
end
return {back, gone}
