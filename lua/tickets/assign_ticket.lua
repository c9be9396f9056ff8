--[[
  A supervisor assigns an open ticket to a member of its group by hand (admin API,
  audited there). Higher privilege than automatic assignment: the agent's status, ticket
  limit and the group's service hours are not checked; group membership is.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {ticket, agent, supervisor (who assigns)}
  Returns: msgpack [{event="ticket_assigned", via="manual", reason="manual",
           previous_agent?}]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG supervisor", "E_TICKET_UNKNOWN <id>",
           "E_TICKET_STATE closed", "E_AGENT_UNKNOWN <id>",
           "E_AGENT_NOT_IN_GROUP <agent> <group>", "E_TICKET_STATE already with <agent>"
]]
OPS.assign_ticket = function(now, a)
  local t = L.open_ticket(a.ticket)
  local aid = L.id(a.agent, "agent")
  local by = L.str(a.supervisor, 256, "supervisor")
  if by == "" then L.fail("E_BAD_ARG", "supervisor") end
  if not L.agent(aid) then L.fail("E_AGENT_UNKNOWN", aid) end
  if call("HEXISTS", K.members(t.g), aid) == 0 then
    L.fail("E_AGENT_NOT_IN_GROUP", aid .. " " .. t.g)
  end
  if t.ag == aid then L.fail("E_TICKET_STATE", "already with " .. aid) end
  local previous = t.ag ~= "" and t.ag or nil
  local ev = {}
  L.ticket_assign(t, aid, "manual", "manual", now, ev, previous)
  ev[1].by = by
  if previous then L.wake_tickets(previous, now) end
  return ev
end
