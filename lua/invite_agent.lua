--[[
  Invite a second agent (an expert) into an assigned session. The invited agent may reply
  (agent_message) but does not own the session and does not use capacity; invitations end
  with the session.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, agent}
  Returns: msgpack [{event="agent_invited", session, agent, by}]
  Errors:  "E_BAD_ID <field>", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>",
           "E_AGENT_UNKNOWN <id>", "E_AGENT_OFFLINE <id>", "E_BAD_ARG agent"
]]
OPS.invite_agent = function(now, a)
  local s = L.live_session(a.session)
  local id = L.id(a.agent, "agent")
  if s.st ~= "assigned" then L.fail("E_SESSION_STATE", L.state_name(s)) end
  local ag = L.agent(id)
  if not ag then L.fail("E_AGENT_UNKNOWN", id) end
  if ag.st == "offline" then L.fail("E_AGENT_OFFLINE", id) end
  if id == s.ag or call("SISMEMBER", K.experts(s.id), id) == 1 then
    L.fail("E_BAD_ARG", "agent already in the session")
  end
  call("SADD", K.experts(s.id), id)
  call("HSET", K.session(s.id), "x", "1") -- it has experts: their set expires with it
  return {{event = "agent_invited", session = s.id, agent = id, by = s.ag}}
end
