--[[
  Set an agent online, away or offline.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {agent, status="online"|"away"|"offline",
                              handover=false}
  online:  becomes a candidate in its groups and takes waiting work.
  Coming on shift (online or away after offline) or going off it also puts the agent
  in or out of its groups' ticket-eligible agents ({t}:g:<g>:tka); coming on shift has
  its groups' waiting tickets looked at by the next ticket tick (docs/tickets.md).
  away:    stops being a candidate; keeps its sessions and parked customers.
  offline: as away, and the customers parked with it go to normal routing at once.
  handover (with away or offline): the agent's open sessions are transferred back to
  their groups (keeping their wait), so agents of the same group take them over.
  Returns: msgpack [{event="agent_status", agent, status, previous}, then assigned/queued;
           with handover one transferred (reason "handover") + assigned/queued per session]
  Errors:  "E_BAD_ID agent", "E_AGENT_UNKNOWN <id>", "E_BAD_ARG status"
]]
local STATUSES = {online = true, away = true, offline = true}

OPS.set_agent_status = function(now, a)
  local id = L.id(a.agent, "agent")
  local st = a.status
  if not STATUSES[st] then L.fail("E_BAD_ARG", "status") end
  local handover = a.handover or false
  if type(handover) ~= "boolean" or (handover and st == "online") then
    L.fail("E_BAD_ARG", "handover")
  end
  local ag = L.agent(id)
  if not ag then L.fail("E_AGENT_UNKNOWN", id) end

  local previous = ag.st
  ag.st = st
  if st == "online" and not ag.last then ag.last = now end
  L.save_agent(ag)
  if (previous == "offline") ~= (st == "offline") then L.ticket_agent(id) end
  L.refresh(ag)
  local ev = {{event = "agent_status", agent = id, status = st, previous = previous}}
  if st == "online" then
    L.fill(ag, now, ev)
  end
  if st ~= "offline" and previous == "offline" then L.wake_tickets(id, now) end
  if handover then
    local sids = call("SMEMBERS", K.agent_sessions(id))
    table.sort(sids)
    for _, sid in ipairs(sids) do
      local s = L.session(sid)
      L.transfer(s, s.g, nil, false, now, ev, "handover")
    end
  end
  if st == "offline" then
    for _, m in ipairs(call("ZRANGE", K.parked(id), 0, -1)) do
      local s = L.session(ssub(m, 27))
      L.unqueue(s)
      L.route(s, now, "agent_offline", ev)
    end
  end
  return ev
end
