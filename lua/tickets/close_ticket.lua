--[[
  Close a ticket with its resolution: by its handler, or by a supervisor (any open
  ticket, also one still waiting for a handler).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {ticket, resolution, agent (the handler) |
                       supervisor (who closes it)}
  Returns: msgpack [{event="ticket_closed", ticket, group, agent?, by, resolution,
           resolution_ms (since creation), hops, type, breached=[...]}]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_TICKET_UNKNOWN <id>",
           "E_TICKET_STATE closed", "E_NOT_TICKET_HANDLER <handler or none>"
]]
OPS.close_ticket = function(now, a)
  local t = L.open_ticket(a.ticket)
  local resolution = L.str(a.resolution, 4000, "resolution")
  if resolution == "" then L.fail("E_BAD_ARG", "resolution") end
  local by
  if a.supervisor ~= nil then
    by = L.str(a.supervisor, 256, "supervisor")
    if by == "" then L.fail("E_BAD_ARG", "supervisor") end
  else
    by = L.id(a.agent, "agent")
    if t.ag ~= by then L.fail("E_NOT_TICKET_HANDLER", t.ag ~= "" and t.ag or "none") end
  end
  L.ticket_leave(t, now, true)
  L.ticket_state(t, "closed")
  call("HSET", K.ticket(t.id), "ct", sfmt("%d", now), "cb", by, "res", resolution)
  call("ZREM", K.ticket_due(), "fr:" .. t.id, "rs:" .. t.id)
  call("ZREM", K.tickets_overdue(), t.id)
  call("ZADD", K.tickets_closed(), sfmt("%d", now), t.id)
  local breached = {}
  if t.brf == "1" then breached[#breached + 1] = "first_response" end
  if t.brr == "1" then breached[#breached + 1] = "resolution" end
  return {{event = "ticket_closed", ticket = t.id, group = t.g, type = t.ty,
           agent = t.ag ~= "" and t.ag or nil, by = by, resolution = resolution,
           resolution_ms = now - t.at, hops = t.hops,
           breached = #breached > 0 and breached or nil}}
end
