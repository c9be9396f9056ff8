--[[
  An assigned or pre-closed session ends. Frees the agent (it then takes waiting work)
  and remembers the customer's last agent for sticky routing.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, reason="closed"}
  Returns: msgpack [{event="released", session, agent, reason}, {event="assigned"...}...]
  Errors:  "E_BAD_ID session", "E_BAD_ARG reason", "E_SESSION_UNKNOWN <id>",
           "E_SESSION_STATE <state>"
  The closed session is kept for the tenant's retention_ms (default one day); the sticky
  memory of the customer for 30 days (the window itself is each group's sticky_ms).
]]
OPS.release_session = function(now, a)
  local sid = L.id(a.session, "session")
  local reason = L.str(a.reason or "closed", 256, "reason")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "assigned" and s.st ~= "preclosed" then L.fail("E_SESSION_STATE", s.st) end

  local ev = {}
  L.release(s, now, reason, "closed", ev)
  return ev
end
