--[[
  The handler works on its ticket (a reply, a note, a status update). The first time it
  touches the ticket it goes from assigned to in_progress (no reassignment for being
  untouched any more); the first response on the ticket, at any hop, stops its
  first-response clock.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {ticket, agent, note=""}
  Returns: msgpack [{event="ticket_responded", ticket, group, agent, note?,
           first_response_ms? (the first one only, ms since creation)}]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG note", "E_TICKET_UNKNOWN <id>",
           "E_TICKET_STATE <state>", "E_NOT_TICKET_HANDLER <handler or none>"
]]
OPS.respond_ticket = function(now, a)
  local t = L.open_ticket(a.ticket)
  local aid = L.id(a.agent, "agent")
  local note = L.str(a.note or "", 4000, "note")
  if t.ag ~= aid then L.fail("E_NOT_TICKET_HANDLER", t.ag ~= "" and t.ag or "none") end
  if t.st == "assigned" then
    L.ticket_state(t, "in_progress")
    call("ZREM", K.ticket_due(), "ra:" .. t.id)
  end
  local first
  if (t.fr or "") == "" then
    t.fr, first = sfmt("%d", now), now - t.at
    call("HSET", K.ticket(t.id), "fr", t.fr)
    call("ZREM", K.ticket_due(), "fr:" .. t.id)
    L.ticket_overdue_check(t)
  end
  return {{event = "ticket_responded", ticket = t.id, group = t.g, agent = aid,
           note = note ~= "" and note or nil, first_response_ms = first}}
end
