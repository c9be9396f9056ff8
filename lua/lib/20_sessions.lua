--[[
  Session transitions shared by the routing ops and the gateway lifecycle ops.
]]
-- How long a closed session (and a customer's sticky memory) is kept, in ms.
function L.close_session(s, now, reason)
  local ttl = tonumber(call("HGET", K.tenant(), "retention_ms")) or 86400000
  s.st = "closed"
  call("HSET", K.session(s.id), "st", "closed", "q", "", "rs", reason, "cl", sfmt("%d", now))
  call("PEXPIRE", K.session(s.id), ttl)
  call("PEXPIRE", K.blocked(s.id), ttl)
end

