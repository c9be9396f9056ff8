--[[
  Close a session at once (an agent closing without confirmation, a supervisor, or a
  call-back: reason "callback" also emits callback_requested with the note). Queued:
  closed like an abandonment; assigned or pre-closed: released, the agent freed.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, reason="closed", note=""}
  Returns: msgpack [{event="callback_requested"...}?, {event="released"|"abandoned"...}, ...]
  Errors:  "E_BAD_ID session", "E_BAD_ARG <field>", "E_SESSION_UNKNOWN <id>",
           "E_SESSION_STATE closed|system_closed"
]]
OPS.close_session = function(now, a)
  local s = L.live_session(a.session)
  -- bytes: 4x the protocol's character limits (64 and 2000), so any valid UTF-8 fits
  local reason = L.str(a.reason or "closed", 256, "reason")
  local note = L.str(a.note or "", 8000, "note")

  local ev = {}
  if reason == "callback" then
    ev[1] = {event = "callback_requested", session = s.id, agent = s.ag ~= "" and s.ag or nil,
             group = s.g, note = note}
  end
  if s.st == "queued" then
    L.abandon(s, now, reason, "closed", ev)
  else
    L.release(s, now, reason, "closed", ev)
  end
  return ev
end
