--[[
  The agent asks to close: waiting_agent/waiting_customer -> pending_confirm; the customer
  is asked to confirm "resolved" or "unresolved"; auto-close timer (confirm_close_ms).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, agent}
  Returns: msgpack [{event="state_changed", session, from, to="pending_confirm"}]
  Errors:  "E_BAD_ID <field>", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>",
           "E_NOT_SESSION_AGENT <agent>"
]]
OPS.request_close = function(now, a)
  local s = L.live_session(a.session)
  local agent = L.id(a.agent, "agent")
  if s.st ~= "assigned" or (s.ph ~= "waiting_agent" and s.ph ~= "waiting_customer") then
    L.fail("E_SESSION_STATE", L.state_name(s))
  end
  L.check_session_agent(s, agent, false)

  local from = s.ph
  L.set_phase(s, "pending_confirm", now)
  L.cancel_timers(s.id, {"sla", "ra", "sr", "sp", "sc"})
  local ms = L.group(s.g).cclose
  if ms and ms > 0 then L.timer("cc", s.id, now + ms) end
  local ev = {}
  L.state_changed(s, from, ev)
  return ev
end
