--[[
  A ticket's current state, for systems that follow tickets over the gateway streams.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {ticket}
  Returns: msgpack [{event="ticket_status", ticket, type, state, group, agent?,
           order_id?, priority, created_ms, created_by, title, hops, first_response_ms?,
           first_response_due_ms?, resolution_due_ms?, overdue, fields?}]
  Errors:  "E_BAD_ID ticket", "E_TICKET_UNKNOWN <id>"
]]
OPS.query_ticket = function(now, a)
  local id = L.id(a.ticket, "ticket")
  local t = L.ticket(id)
  if not t then L.fail("E_TICKET_UNKNOWN", id) end
  return {L.ticket_view(t)}
end
