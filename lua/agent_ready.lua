--[[
  An agent may have free capacity (e.g. the gateway says so): it takes waiting customers
  while it is online with load < capacity.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {agent}
  Returns: msgpack [{event="assigned", ...}...] (empty when it takes nobody)
  Errors:  "E_BAD_ID agent", "E_AGENT_UNKNOWN <id>"
]]
OPS.agent_ready = function(now, a)
  local id = L.id(a.agent, "agent")
  local ag = L.agent(id)
  if not ag then L.fail("E_AGENT_UNKNOWN", id) end
  local ev = {}
  L.fill(ag, now, ev)
  return ev
end
