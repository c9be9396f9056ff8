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
  if s.st ~= "preclosed" then L.fail("E_SESSION_STATE", s.st) end

  local ag = L.agent(s.ag)
  if ag.st ~= "offline" then
    call("SMOVE", K.agent_preclosed(s.ag), K.agent_sessions(s.ag), sid)
    ag.load, ag.pre = ag.load + 1, ag.pre - 1
    L.save_agent(ag)
    call("HSET", K.session(sid), "st", "assigned")
    L.refresh(ag)
    return {{event = "reactivated", session = sid, agent = ag.id, over_capacity = ag.load > ag.cap}}
  end
  call("SREM", K.agent_preclosed(s.ag), sid)
  ag.pre = ag.pre - 1
  L.save_agent(ag)
  L.refresh(ag)
  local ev = {}
  L.route(s, now, "reactivation", ev)
  return ev
end
