--[[
  The customer answers the close request: resolved -> closed (reason "resolved"), the
  agent freed; unresolved -> waiting_agent again.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, resolved}
  Returns: msgpack [{event="released", reason="resolved"...}, assigned...] or
           [{event="state_changed", from="pending_confirm", to="waiting_agent"}]
  Errors:  "E_BAD_ID session", "E_BAD_ARG resolved", "E_SESSION_UNKNOWN <id>",
           "E_SESSION_STATE <state>"
]]
OPS.confirm_close = function(now, a)
  local s = L.live_session(a.session)
  if type(a.resolved) ~= "boolean" then L.fail("E_BAD_ARG", "resolved") end
  if s.ph ~= "pending_confirm" then L.fail("E_SESSION_STATE", L.state_name(s)) end

  local ev = {}
  if a.resolved then
    L.release(s, now, "resolved", "closed", ev)
  else
    L.on_waiting_agent(s, now)
    L.state_changed(s, "pending_confirm", ev)
  end
  return ev
end
