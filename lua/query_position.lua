--[[
  Where is this queued customer? Its 1-based position in its group queue (or among the
  customers parked with the same agent); the gateway stream adds the ETA.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session}
  Returns: msgpack [{event="position", session, group, position, wait_ms, parked_with?}]
  Errors:  "E_BAD_ID session", "E_SESSION_UNKNOWN <id>", "E_SESSION_STATE <state>"
]]
OPS.query_position = function(now, a)
  local s = L.live_session(a.session)
  if s.st ~= "queued" then L.fail("E_SESSION_STATE", L.state_name(s)) end
  return {L.position_event(s, now)}
end
