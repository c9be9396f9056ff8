--[[
  The customer wrote. Waiting for the customer or for confirmation -> waiting_agent (the
  agent owes a reply; reply SLA starts). A pre-closed session is reactivated (back to its
  agent, or re-queued if that agent is offline). Queued or already waiting_agent: no change.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="state_changed", session, from, to}] and/or reactivated /
           queued / assigned events; [] when nothing changes
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE closed|system_closed"
]]
OPS.customer_message = function(now, a)
  local s = L.live_session(a.session)
  local ev = {}
  if s.st == "preclosed" then
    local from = s.ph
    if L.reactivate(s, now, ev) then L.state_changed(s, from, ev) end
  elseif s.ph == "waiting_customer" or s.ph == "pending_confirm" then
    local from = s.ph
    L.on_waiting_agent(s, now)
    L.state_changed(s, from, ev)
  end
  return ev
end
