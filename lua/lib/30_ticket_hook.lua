--[[
  The ticket hooks every script has (the ticket code itself is lua/tickets/).

  Ticket-eligible agents {t}:g:<group>:tka (docs/tickets.md "Assignment"), so that
  finding a ticket's handler costs O(log members) and not a look at every member: a zset
  of the group's members on shift (status online or away) with fewer open tickets than
  their ticket limit (agent field tlim, default 20). Score: open tickets (the ZCARD of
  {t}:a:<agent>:tk); member: the agent's last ticket assignment (field tka, ms, 0 never)
  as 15 digits, then its id. Equal scores order by member, so the first is the least
  loaded, then the longest since its last ticket, then the lowest id: the balanced pick.
  Whatever changes one of these calls L.ticket_agent: a status to or from offline
  (set_agent_status), a ticket assigned or leaving its handler (lua/tickets/00_lib.lua),
  a ticket limit or groups (configure_agent); an agent or group deleted takes itself out.
  {t}:tkab marks the groups whose set was built from their members: a group older than
  the sets gets it at its first use (L.ticket_agents_ready, lua/tickets/00_lib.lua), or
  from recount_agents. A change written behind the scripts' back (an operator's repair of
  an agent hash) is seen at the group's next look that finds nobody eligible
  (L.ticket_check_group: its minute poll while tickets wait).
]]
local TICKET_LIMIT = 20 -- an agent's ticket limit when it has none (configure_agent's default)

-- Look at group g's waiting tickets no later than `due` (the next ticket tick after it).
function L.ticket_wake(g, due)
  call("ZADD", K.ticket_due(), "LT", sfmt("%d", due), "gq:" .. g)
  L.scheduled(due)
end

-- An agent that may take waiting tickets now (it came on shift, got a higher limit or a
-- new group, or finished a ticket): its groups' waiting tickets are looked at next tick.
function L.wake_tickets(aid, now)
  for _, g in ipairs(call("HKEYS", K.skills(aid))) do
    if call("ZCARD", K.ticket_queue(g)) > 0 then L.ticket_wake(g, now) end
  end
end

-- Agent aid's member in the ticket-eligible sets, given its last ticket assignment (ms).
function L.ticket_member(tka, aid)
  return sfmt("%015d", tka) .. aid
end

-- Put agent aid where it belongs in the ticket-eligible sets of its groups (of `groups`
-- only, when given), from what is stored now: in, scored by its open tickets, while it
-- is on shift and under its ticket limit; out otherwise. `old_tka`: its last ticket
-- assignment before this change, when the change set a new one (that member goes).
-- Cost: O(its groups x log members).
function L.ticket_agent(aid, old_tka, groups)
  local r = call("HMGET", K.agent(aid), "st", "tlim", "tka")
  local m = L.ticket_member(tonumber(r[3]) or 0, aid)
  local stale = old_tka and L.ticket_member(old_tka, aid)
  if stale == m then stale = nil end
  local load = call("ZCARD", K.agent_tickets(aid))
  local on = r[1] and r[1] ~= "offline" and load < (tonumber(r[2]) or TICKET_LIMIT)
  for _, g in ipairs(groups or call("HKEYS", K.skills(aid))) do
    local key = K.ticket_agents(g)
    if stale then call("ZREM", key, stale) end
    if on then call("ZADD", key, load, m) else call("ZREM", key, m) end
  end
end

-- Take agent aid out of the ticket-eligible sets of `groups` (groups it leaves).
function L.ticket_agent_leave(aid, groups)
  local m = L.ticket_member(tonumber(call("HGET", K.agent(aid), "tka")) or 0, aid)
  for _, g in ipairs(groups) do call("ZREM", K.ticket_agents(g), m) end
end
