--[[
  Forward a ticket to another group, with a note: the handler (or a supervisor) sends it
  on; it leaves its handler and enters the new group like a new ticket (held, assigned
  or queued), keeping its creation time, priority and SLA clock. Each hop is recorded
  (who, when, from, to, note, time spent in the group it leaves). A hop into a group
  the ticket has been in before is a loop: recorded on the hop and reported with a
  ticket_loop event, not refused (sending work back can be right).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {ticket, to_group, note, agent (the handler) |
                       supervisor (who, for a supervisor's forward: any open ticket)}
  Returns: msgpack [{event="ticket_forwarded", ticket, from_group, to_group, by,
           from_agent?, note, hop, spent_ms, loop}, {event="ticket_loop", ...}?, then
           ticket_assigned | ticket_queued | ticket_held (after the events of tickets
           already waiting in the new group, as for create_ticket)]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_TICKET_UNKNOWN <id>",
           "E_TICKET_STATE closed", "E_GROUP_UNKNOWN <id>", "E_SAME_GROUP <id>",
           "E_NOT_TICKET_HANDLER <handler or none>"
]]
OPS.forward_ticket = function(now, a)
  local t = L.open_ticket(a.ticket)
  local to = L.id(a.to_group, "to_group")
  local note = L.str(a.note or "", 4000, "note")
  local by
  if a.supervisor ~= nil then
    by = L.str(a.supervisor, 256, "supervisor")
    if by == "" then L.fail("E_BAD_ARG", "supervisor") end
  else
    by = L.id(a.agent, "agent")
    if t.ag ~= by then L.fail("E_NOT_TICKET_HANDLER", t.ag ~= "" and t.ag or "none") end
  end
  if not L.group(to) then L.fail("E_GROUP_UNKNOWN", to) end
  if to == t.g then L.fail("E_SAME_GROUP", to) end

  local visits = tonumber(call("HGET", K.ticket_visits(t.id), to)) or 0
  local hop = t.hops + 1
  local from, from_agent = t.g, t.ag ~= "" and t.ag or nil
  local record = {hop = hop, by = by, at_ms = now, from_group = from, to_group = to,
                  from_agent = from_agent, note = note, spent_ms = now - t.ga,
                  loop = visits > 0}
  call("RPUSH", K.ticket_hops(t.id), cjson.encode(record))
  call("HSET", K.ticket(t.id), "hops", hop)
  t.hops = hop
  L.ticket_leave(t, now, false)
  local ev = {{event = "ticket_forwarded", ticket = t.id, from_group = from, to_group = to,
               by = by, from_agent = from_agent, note = note, hop = hop,
               spent_ms = record.spent_ms, loop = visits > 0}}
  if visits > 0 then
    ev[#ev + 1] = {event = "ticket_loop", ticket = t.id, group = to, hop = hop,
                   visits = visits + 1}
  end
  L.ticket_enter(t, to, now, "forwarded", ev)
  return ev
end
