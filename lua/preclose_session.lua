--[[
  Pre-close an assigned session whose customer went quiet: it stops counting in the
  agent's load (the agent may take more work) but is remembered, and counts M times in
  the agent's readiness because it may come back.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="preclosed", session, agent}, {event="assigned", ...}...]
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>"
]]
OPS.preclose_session = function(now, a)
  local sid = L.id(a.session, "session")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "assigned" then L.fail("E_SESSION_STATE", L.state_name(s)) end

  local ev = {}
  L.preclose(s, now, ev)
  return ev
end
