--[[
  The session's agent (or an invited agent) replied: waiting_agent -> waiting_customer; the
  customer-silence timers start (reminder, pre-close, close). A later reply while waiting
  for the customer restarts them. The first reply records the first-response time.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, agent}
  Returns: msgpack [{event="state_changed", session, from, to, first_response_ms?}] or []
  Errors:  "E_BAD_ID <field>", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>",
           "E_NOT_SESSION_AGENT <agent>"
]]
OPS.agent_message = function(now, a)
  local s = L.live_session(a.session)
  local agent = L.id(a.agent, "agent")
  if s.st ~= "assigned" then L.fail("E_SESSION_STATE", L.state_name(s)) end
  L.check_session_agent(s, agent, true)

  local ev = {}
  if s.ph == "waiting_agent" or s.ph == "waiting_customer" then
    local from = s.ph
    local first = from == "waiting_agent" and (not s.fr or s.fr == "")
    -- the first response time is written with the phase (one HSET)
    L.on_waiting_customer(s, now, first and "fr" or nil, first and sfmt("%d", now) or nil)
    if from == "waiting_agent" then
      local e = L.state_changed(s, from, ev)
      if first then e.first_response_ms = now - tonumber(s.asg) end
    end
  end
  return ev
end
