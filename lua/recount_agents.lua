--[[
  Rebuild the agent counters the metrics sampler reads ({t}:ast and every group's
  {t}:g:<group>:ast, see lua/lib/00_core.lua) from the agents themselves, and mark them
  valid (field "v" of {t}:ast). Every transition keeps them exact afterwards; this runs
  once for a tenant whose counters were never marked (data written before they existed).
  It also rebuilds every group's ticket-eligible agents ({t}:g:<group>:tka, see
  lua/lib/30_ticket_hook.lua) and marks them built ({t}:tkab); a group whose set was
  never built gets it at its first ticket assignment anyway.
  Cost: O(agents + their skills), once per tenant; never on the routing path.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {} (no fields)
  Returns: msgpack [{event="agents_recounted", agents=<number counted>}]
  Errors:  none of its own
]]
OPS.recount_agents = function(now, a)
  call("DEL", K.agent_totals())
  for _, g in ipairs(call("SMEMBERS", K.groups())) do call("DEL", K.group_agents(g)) end
  local ids = call("SMEMBERS", K.agents())
  for _, id in ipairs(ids) do
    local ag = L.agent(id)
    if ag then
      ag.counted = nil
      L.save_agent(ag)
    end
  end
  call("HSET", K.agent_totals(), "v", "1")
  for _, g in ipairs(call("SMEMBERS", K.groups())) do L.ticket_agents_ready(g, true) end
  return {{event = "agents_recounted", agents = #ids}}
end
