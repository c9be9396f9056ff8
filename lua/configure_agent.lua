--[[
  Create or replace an agent's capacity, abilities (its group memberships) and team.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {agent, capacity, abilities={group: ability>0}, team="",
                              ticket_limit=20 (open tickets it may hold, docs/tickets.md)}
  Touches: the agent hash and skills, {t}:g:<g>:m, :r and :tka (ticket-eligible agents)
           of old and new groups, and whatever the agent then takes (it takes work if
           online with free capacity).
  Returns: msgpack [{event="agent_configured", agent}, {event="assigned", ...}...]
  Errors:  "E_BAD_ID agent", "E_BAD_ARG <field>", "E_GROUP_UNKNOWN <group>"
  A new agent starts offline.
]]
OPS.configure_agent = function(now, a)
  local id = L.id(a.agent, "agent")
  local cap = L.int(a.capacity, 0, 1000, "capacity")
  local team = L.str(a.team or "", 256, "team")
  local tlim = L.int(a.ticket_limit or 20, 0, 100000, "ticket_limit")
  local abilities = a.abilities or {}
  if type(abilities) ~= "table" then L.fail("E_BAD_ARG", "abilities") end
  local count = 0
  for g, ab in pairs(abilities) do
    L.id(g, "abilities")
    L.num(ab, 1e-9, 1e6, "abilities." .. g)
    if not L.group(g) then L.fail("E_GROUP_UNKNOWN", g) end
    count = count + 1
  end
  if count > 256 then L.fail("E_BAD_ARG", "abilities") end

  local ag = L.agent(id)
  if not ag then
    ag = {id = id, st = "offline", cap = cap, load = 0, pre = 0}
    AGENTS[id] = ag
    call("SADD", K.agents(), id)
  end
  L.uncount_agent(ag) -- counted again in its new groups by L.save_agent
  local old, gone = call("HGETALL", K.skills(id)), {}
  for i = 1, #old, 2 do
    if abilities[old[i]] == nil then
      call("ZREM", K.ready(old[i]), id)
      call("HDEL", K.members(old[i]), id)
      gone[#gone + 1] = old[i]
    end
  end
  call("DEL", K.skills(id))
  for g, ab in pairs(abilities) do
    call("HSET", K.skills(id), g, sfmt("%.17g", ab))
    call("HSET", K.members(g), id, sfmt("%.17g", ab))
  end
  ag.cap, ag.sk = cap, nil
  L.save_agent(ag)
  call("HSET", K.agent(id), "team", team, "tlim", tlim)
  L.ticket_agent_leave(id, gone)
  L.ticket_agent(id) -- its ticket limit or groups may have changed
  L.wake_tickets(id, now)
  L.refresh(ag)
  local ev = {{event = "agent_configured", agent = id}}
  L.fill(ag, now, ev)
  return ev
end
