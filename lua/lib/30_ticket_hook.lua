--[[
  The ticket hooks every script has (the ticket code itself is lua/tickets/).
]]

-- Look at group g's waiting tickets no later than `due` (the next ticket tick after it).
function L.ticket_wake(g, due)
  call("ZADD", K.ticket_due(), "LT", sfmt("%d", due), "gq:" .. g)
end

-- An agent that may take waiting tickets now (it came on shift, got a higher limit or a
-- new group, or finished a ticket): its groups' waiting tickets are looked at next tick.
function L.wake_tickets(aid, now)
  for _, g in ipairs(call("HKEYS", K.skills(aid))) do
    if call("ZCARD", K.ticket_queue(g)) > 0 then L.ticket_wake(g, now) end
  end
end
