-- take.lua: move one member between sorted sets when its score is due, so only one
-- process takes it (the new score doubles as that process's lease on it); optionally
-- rename the hash that member describes, so its old owner can no longer touch it.
--
-- KEYS[1]  sorted set to take the member from (e.g. Keys.inflight or Keys.verify)
-- KEYS[2]  sorted set to put it in (e.g. Keys.verify; may be KEYS[1] itself)
-- KEYS[3]  optional: hash to rename (e.g. Keys.batch(old id))
-- KEYS[4]  optional: its new name (e.g. Keys.batch(new id))
-- ARGV[1]  member (a batch id)
-- ARGV[2]  highest score that counts as due
-- ARGV[3]  score in KEYS[2] afterwards
-- ARGV[4]  optional: the member's name in KEYS[2] (default ARGV[1])
--
-- Changes: when the member is in KEYS[1] with a score <= ARGV[2]: ZREM it from KEYS[1],
-- ZADD ARGV[4] (or ARGV[1]) to KEYS[2] with score ARGV[3], and RENAME KEYS[3] to KEYS[4]
-- when both are given and KEYS[3] exists. Returns 1 when taken, else 0.

local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[4] or ARGV[1])
if KEYS[4] and redis.call("EXISTS", KEYS[3]) == 1 then
  redis.call("RENAME", KEYS[3], KEYS[4])
end
return 1
