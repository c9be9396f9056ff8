--[[
  A queued (or parked) customer leaves before being served: removed from every queue and
  timer, closed with reason "abandoned".
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="abandoned", session, group, wait_ms}]
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>"
]]
OPS.abandon_customer = function(now, a)
  local sid = L.id(a.session, "session")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "queued" then L.fail("E_SESSION_STATE", L.state_name(s)) end

  local ev = {}
  L.abandon(s, now, "abandoned", "closed", ev)
  return ev
end
