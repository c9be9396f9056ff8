--[[
  A customer arrives in a skill group: assigned at once, parked with a preferred
  (directed or sticky) agent, or queued by virtual arrival = arrival - priority * U.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock; it is the arrival time
  ARGV[2] command      msgpack map {session, group | attributes={name: value},
                              customer?, priority=0, directed_agent?, last_agent?,
                              blocked_agents=[], gateway? (echoed on its gateway events)}
           Without a group, the first routing rule matching `attributes` gives the group,
           adds its priority, and supplies a preferred agent (unless directed_agent is
           given) and more blocked agents.
  Returns: msgpack [{event="assigned", ...}] or [{event="queued", ...}]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_GROUP_UNKNOWN <id>",
           "E_SESSION_EXISTS <id>", "E_AGENT_UNKNOWN <directed agent>",
           "E_NO_ROUTE <why>" (no group, and no rule matches the attributes)
]]

local function not_used(agent, kind, reason)
  return {agent = agent, kind = kind, used = false, reason = reason}
end

-- The preferred agent (a table) and its kind, per docs/routing.md "Directed and sticky";
-- or nil and, when there was one that cannot be used, why (for the decision record).
local function preferred(now, gc, directed, last, customer, blocked)
  if directed then
    if blocked[directed.id] then
      return nil, nil, not_used(directed.id, "directed", "blocked by the customer")
    end
    return directed, "directed"
  end
  if gc.sticky <= 0 then return nil end
  local cand = last
  if not cand and customer then
    local r = call("HMGET", K.customer(customer), "ag", "at")
    if r[1] and now - tonumber(r[2]) <= gc.sticky then cand = r[1] end
  end
  if not cand then return nil end
  if blocked[cand] then return nil, nil, not_used(cand, "sticky", "blocked by the customer") end
  local ag = L.agent(cand)
  if not ag then return nil, nil, not_used(cand, "sticky", "unknown agent") end
  return ag, "sticky"
end

-- Group, priority, directed agent and blocked list after the routing rules (SPEC 2.1).
local function entry(a, prio, directed_id, bl)
  if a.group ~= nil then return L.id(a.group, "group"), prio, directed_id, bl, nil end
  local attrs = a.attributes
  if type(attrs) ~= "table" then L.fail("E_NO_ROUTE", "neither group nor attributes") end
  local r, position = L.match_rule(attrs)
  if not r then L.fail("E_NO_ROUTE", "no routing rule matches the attributes") end
  local merged = {}
  for _, x in ipairs(bl) do merged[#merged + 1] = x end
  for _, x in ipairs(r.blocked_agents) do merged[#merged + 1] = x end
  if #merged > 200 then L.fail("E_BAD_ARG", "blocked_agents") end
  prio = math.max(-1000, math.min(1000, prio + r.priority))
  return r.group, prio, directed_id, merged, r.preferred_agent, {name = r.name, position = position}
end

OPS.arrive = function(now, a)
  local sid = L.id(a.session, "session")
  local customer = L.opt_id(a.customer, "customer")
  local prio = L.int(a.priority or 0, -1000, 1000, "priority")
  local directed_id = L.opt_id(a.directed_agent, "directed_agent")
  local last = L.opt_id(a.last_agent, "last_agent")
  local gateway = L.opt_id(a.gateway, "gateway")
  local bl = L.list(a.blocked_agents, 100, "blocked_agents")
  for i = 1, #bl do L.id(bl[i], "blocked_agents") end
  local g, rule_pref, rule
  g, prio, directed_id, bl, rule_pref, rule = entry(a, prio, directed_id, bl)
  local gc = L.group(g)
  if not gc then L.fail("E_GROUP_UNKNOWN", g) end
  if call("EXISTS", K.session(sid)) == 1 then L.fail("E_SESSION_EXISTS", sid) end
  local directed, gone
  if directed_id then
    directed = L.agent(directed_id)
    if not directed then L.fail("E_AGENT_UNKNOWN", directed_id) end
  elseif rule_pref then
    directed = L.agent(rule_pref) or nil -- a rule's preferred agent that is gone is ignored
    if not directed then gone = not_used(rule_pref, "directed", "unknown agent") end
  end

  local seq = call("HINCRBY", K.tenant(), "seq", 1)
  local s = {
    id = sid, g = g, p = prio, at = now, sq = seq, tr = 0, q = "", st = "queued",
    m = L.member(now, seq, #bl > 0, sid), bl = #bl > 0 and "1" or "0", blk = {},
    fresh = true, -- no timer of its own yet: nothing to cancel
  }
  -- written with the first state it gets (assigned, parked or queued): one HSET
  s.pending = {"st", "queued", "g", g, "p", prio, "at", sfmt("%d", now), "sq", seq, "tr", 0,
    "q", "", "bl", s.bl, "c", customer or "", "gw", gateway or ""}
  -- the rule that chose the group (decision records, lua/lib/15_decisions.lua)
  s.ctx = {rule = rule}
  if rule then
    local p = s.pending
    p[#p + 1], p[#p + 2] = "ru", rule.position .. "\t" .. rule.name
  end
  call("HINCRBY", K.group_open(), g, 1)
  if #bl > 0 then
    call("SADD", K.blocked(sid), unpack(bl))
    for i = 1, #bl do s.blk[bl[i]] = true end
  end

  local ev = {}
  local pref, kind, note = preferred(now, gc, directed, last, customer, s.blk)
  if pref then
    if pref.st == "online" and pref.load < pref.cap then
      if gc.rd then
        L.decide_preferred(s, pref, now,
          {agent = pref.id, kind = kind, used = true, reason = "free capacity"})
      end
      L.assign(s, pref, kind, 0, now, ev)
      return ev
    end
    if pref.st ~= "offline" and gc.pref > 0 then
      L.park(s, pref, kind, now + gc.pref, "arrival", ev)
      return ev
    end
    note = not_used(pref.id, kind, pref.st == "offline" and "offline"
      or (pref.st == "away" and "away" or "at capacity") .. ", preference_ms is 0")
  end
  if gc.rd then s.pnote = note or gone end
  L.route(s, now, "arrival", ev)
  return ev
end
