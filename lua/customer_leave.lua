--[[
  The customer left. Queued: removed from the queue, closed as "abandoned". Assigned or
  pre-closed: the session is closed with reason "customer_left" and its agent freed.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="abandoned"...}] or [{event="released"...}, assigned...]
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE closed|system_closed"
]]
OPS.customer_leave = function(now, a)
  local s = L.live_session(a.session)
  local ev = {}
  if s.st == "queued" then
    L.abandon(s, now, "abandoned", "closed", ev)
  else
    L.release(s, now, "customer_left", "closed", ev)
  end
  return ev
end
