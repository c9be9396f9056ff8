--[[
  A pre-closed session's customer is back. It returns to the same agent, even over
  capacity, while that agent is online or away; if the agent is offline it is re-queued
  in its group with its original arrival and priority.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="reactivated", session, agent, over_capacity}]
           or [{event="queued"|"assigned", ...}] when re-queued
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>"
]]
OPS.reactivate_session = function(now, a)
  local sid = L.id(a.session, "session")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "preclosed" then L.fail("E_SESSION_STATE", L.state_name(s)) end

  local ev = {}
  L.reactivate(s, now, ev)
  return ev
end
