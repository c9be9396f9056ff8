--[[
  Move a queued or assigned session to another group (it keeps its arrival and priority,
  re-ranked with the new group's U; any preference is dropped) or to a named agent
  (assigned if that agent is a candidate; else parked with it for the group's
  preference_ms, or routed in its group at once when that is 0; force=true assigns even
  over capacity). The old agent, if any, is freed and takes waiting work.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {session, to_group? | to_agent?, force=false}
  Returns: msgpack [{event="transferred", session, from_group, to_group, from_agent?,
           to_agent?}, then the session's assigned/queued, then the old agent's assigned]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_SESSION_UNKNOWN <id>",
           "E_SESSION_STATE <state>", "E_GROUP_UNKNOWN <id>", "E_AGENT_UNKNOWN <id>",
           "E_AGENT_OFFLINE <id>", "E_AGENT_BLOCKED <id>"
]]
OPS.transfer_session = function(now, a)
  local sid = L.id(a.session, "session")
  local to_group = L.opt_id(a.to_group, "to_group")
  local to_agent = L.opt_id(a.to_agent, "to_agent")
  local force = a.force or false
  if type(force) ~= "boolean" then L.fail("E_BAD_ARG", "force") end
  if (to_group == nil) == (to_agent == nil) then
    L.fail("E_BAD_ARG", "exactly one of to_group, to_agent")
  end
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st ~= "queued" and s.st ~= "assigned" then L.fail("E_SESSION_STATE", L.state_name(s)) end
  local target
  if to_group then
    if not L.group(to_group) then L.fail("E_GROUP_UNKNOWN", to_group) end
  else
    target = L.agent(to_agent)
    if not target then L.fail("E_AGENT_UNKNOWN", to_agent) end
    if target.st == "offline" then L.fail("E_AGENT_OFFLINE", to_agent) end
    if L.blocked(s)[to_agent] then L.fail("E_AGENT_BLOCKED", to_agent) end
    if s.st == "assigned" and s.ag == to_agent then L.fail("E_BAD_ARG", "to_agent: already there") end
  end

  local ev = {}
  L.transfer(s, to_group, target, force, now, ev)
  return ev
end
