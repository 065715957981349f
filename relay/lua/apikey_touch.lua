-- apikey_touch.lua: record when an API key was last used, unless it was revoked meanwhile.
--
-- KEYS[1]      the key's hash apikey:<sha256 hex> (fields name, scope, created, used)
-- ARGV[1]      now (ms)
--
-- Changes: HSET used = now, only when the hash still exists (a revoked key is not brought
-- back as a hash holding only "used"). Returns 1 when it was set, else 0.

if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
redis.call("HSET", KEYS[1], "used", ARGV[1])
return 1
