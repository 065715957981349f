-- cancel.lua: take one waiting message out of its lane and its schedule.
--
-- KEYS[1]      the message's lane list (by its device, SIM and urgency)
-- KEYS[2]      the message's schedule zset (same lane)
-- ARGV[1]      message id
--
-- Changes: LREM of the id from the lane (searching from the tail, where recent sends
-- are) and ZREM from the schedule. A sched-due score left too early is corrected by the
-- next promote. Returns 1 if the id was in either, else 0 (a worker claimed it).
-- The caller runs transition.lua (-> cancelled) in the same MULTI.

local removed = redis.call("LREM", KEYS[1], -1, ARGV[1])
removed = removed + redis.call("ZREM", KEYS[2], ARGV[1])
if removed > 0 then return 1 end
return 0
