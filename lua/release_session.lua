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
  local reason = L.str(a.reason or "closed", 64, "reason")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "assigned" and s.st ~= "preclosed" then L.fail("E_SESSION_STATE", s.st) end

  local ag = L.agent(s.ag)
  if s.st == "assigned" then
    call("SREM", K.agent_sessions(s.ag), sid)
    ag.load = ag.load - 1
  else
    call("SREM", K.agent_preclosed(s.ag), sid)
    ag.pre = ag.pre - 1
  end
  L.save_agent(ag)
  L.close_session(s, now, reason)
  if s.c and s.c ~= "" then
    call("HSET", K.customer(s.c), "ag", s.ag, "at", sfmt("%d", now))
    call("PEXPIRE", K.customer(s.c), 2592000000)
  end
  L.refresh(ag)
  local ev = {{event = "released", session = sid, agent = s.ag, reason = reason}}
  L.fill(ag, now, ev)
  return ev
end
