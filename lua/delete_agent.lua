--[[
  Delete an agent. Refused while it still holds work: assigned or pre-closed sessions,
  or customers parked with it (directed, sticky or transferred to it), or open tickets. It leaves every
  group's members and ranking. Customers who remember it (sticky) or block it are not
  touched: a preference for an agent that is gone is ignored at arrival.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {agent}
  Touches: the agent's hash, skills, session sets, parking zset and ticket lists; the
           members, ranking and ticket-eligible agents of each of its groups; the agent
           set.
  Returns: msgpack [{event="agent_deleted", agent}]
  Errors:  "E_BAD_ID agent", "E_AGENT_UNKNOWN <id>", "E_AGENT_BUSY <what it holds>"
]]
OPS.delete_agent = function(now, a)
  local id = L.id(a.agent, "agent")
  local ag = L.agent(id)
  if not ag then L.fail("E_AGENT_UNKNOWN", id) end
  local parked = call("ZCARD", K.parked(id))
  local tickets = call("ZCARD", K.agent_tickets(id))
  if tickets > 0 then L.fail("E_AGENT_BUSY", tickets .. " open tickets") end
  if ag.load > 0 or ag.pre > 0 or parked > 0 then
    L.fail("E_AGENT_BUSY", sfmt("%d assigned, %d pre-closed, %d parked sessions",
      ag.load, ag.pre, parked))
  end

  L.uncount_agent(ag)
  local skills = call("HKEYS", K.skills(id))
  for _, g in ipairs(skills) do
    call("ZREM", K.ready(g), id)
    call("HDEL", K.members(g), id)
  end
  L.ticket_agent_leave(id, skills)
  call("DEL", K.agent(id), K.skills(id), K.agent_sessions(id), K.agent_preclosed(id),
    K.parked(id), K.agent_tickets(id), K.agent_handled(id))
  call("SREM", K.agents(), id)
  AGENTS[id] = false
  return {{event = "agent_deleted", agent = id}}
end
