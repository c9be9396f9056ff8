--[[
  Decision records: why a session went to its agent (docs/routing.md "Why this agent?").
  Only for a session whose group has record_decisions (`rd` in its timer map); nothing
  here runs otherwise.

  A caller that is about to assign builds the record's own part in s.dec (its side,
  candidates, customers); L.assign completes it (agent, group, via, tier, open tier,
  rule, preferred agent) and puts it on the `assigned` event as `decision`, which
  lua/lib/90_entry.lua writes into the session's history only (never on {t}:out).

  Cost: the top DECISION_TOP of each candidate set reported (one ZRANGE each), one
  agent hash (L.agent, cached per command) and one ability (HGET) per reported
  candidate, and one HMGET of the session's rule and preference note ("ru", "pn") for
  a session not made by this very command.

  Session fields kept for it (docs/routing.md):
    ru  "<position>\t<rule name>": the routing rule that chose the group at arrival
        (written with the arrival whenever a rule matched)
    pn  "<agent>\t<kind>\t<reason>": a preferred agent that was not used, while the
        session waits (written when it is queued; dropped when it is assigned)
]]
local DECISION_TOP = 5

function L.records(s)
  local gc = L.group(s.g)
  return gc and gc.rd == true
end

local function null_or(v)
  if v == nil then return cjson.null end
  return v
end

-- The rule and the stored preference note of session s (read once).
local function context(s)
  local ctx = s.ctx
  if ctx then return ctx end
  ctx = {}
  local r = call("HMGET", K.session(s.id), "ru", "pn")
  if r[1] and r[1] ~= "" then
    local pos, name = r[1]:match("^(%d+)\t(.*)$")
    if pos then ctx.rule = {name = name, position = tonumber(pos)} end
  end
  if r[2] and r[2] ~= "" then
    local a, kind, reason = r[2]:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    if a then
      ctx.pn = {agent = a, kind = kind, used = false, reason = reason}
      ctx.pn_stored = true
    end
  end
  s.ctx = ctx
  return ctx
end

-- The stored form of a preference note (the session's "pn" field).
function L.note_text(n)
  return n.agent .. "\t" .. n.kind .. "\t" .. n.reason
end

-- Agent ag's ability in group g (nil: not a member), without a call when its skills
-- were read already.
local function ability(ag, g)
  local sk = ag.sk
  if sk then
    for i = 1, #sk, 2 do
      if sk[i] == g then return tonumber(sk[i + 1]) end
    end
    return nil
  end
  return tonumber(call("HGET", K.skills(ag.id), g))
end

-- A candidate's score terms in group g, as they are now; `rank`: its stored rank when
-- it was read from the candidate set (else computed).
function L.candidate_terms(ag, g, now, blocked, rank)
  local gc, ab = L.group(g), ability(ag, g)
  local c = {
    agent = ag.id, group = g, capacity = ag.cap, load = ag.load, preclosed = ag.pre,
    blocked = blocked and true or false,
    idle_ms = ag.last and now - ag.last or cjson.null,
    ability = cjson.null, spare_term = cjson.null, preclosed_term = cjson.null,
    rank = cjson.null, readiness = cjson.null,
  }
  if gc and ab and ag.cap > 0 then
    c.ability = ab
    c.spare_term = gc.k * (ag.cap - ag.load) / ag.cap * ab
    -- (0, not -0, when nothing is pre-closed)
    c.preclosed_term = ag.pre == 0 and 0 or -gc.k * gc.m * ag.pre / ag.cap * ab
    rank = rank or L.rank(ag, gc, ab)
    c.rank, c.readiness = rank, now / 1000 - rank
  end
  return c
end

-- Customer side: the top DECISION_TOP of the candidate sets of `groups` (the pool the
-- winner `winner` came from), merged in the router's order, the winner added if the
-- customer blocked so many that it was not among them.
function L.decide_customer(s, groups, winner, now)
  local blocked, rows = L.blocked(s), {}
  for _, g in ipairs(groups) do
    local r = call("ZRANGE", K.ready(g), 0, DECISION_TOP - 1, "WITHSCORES")
    for i = 1, #r, 2 do rows[#rows + 1] = {a = r[i], g = g, rank = tonumber(r[i + 1])} end
  end
  table.sort(rows, function(x, y)
    if x.rank ~= y.rank then return x.rank < y.rank end
    if x.a ~= y.a then return x.a < y.a end
    return x.g < y.g
  end)
  local cands, has_winner = {}, false
  for i = 1, math.min(#rows, DECISION_TOP) do
    local x = rows[i]
    local ag = L.agent(x.a)
    if ag then
      cands[#cands + 1] = L.candidate_terms(ag, x.g, now, blocked[x.a], x.rank)
      if x.a == winner.a and x.g == winner.g then has_winner = true end
    end
  end
  if not has_winner then
    local ag = L.agent(winner.a)
    cands[#cands + 1] = L.candidate_terms(ag, winner.g, now, false, winner.rank)
  end
  s.dec = {side = "customer", candidates = cands}
end

-- Preferred side: straight to agent ag; `note` the preferred agent's entry.
function L.decide_preferred(s, ag, now, note)
  s.pnote = note
  s.dec = {side = "preferred", candidates = {L.candidate_terms(ag, s.g, now, false)}}
end

-- Agent side: agent ag takes session s; `seen` the heads it compared (pick_for_agent),
-- `via_group` the agent's group it found s through (nil: parked with it).
function L.decide_agent(s, ag, seen, kind, via_group, now)
  table.sort(seen, function(x, y)
    if x.ord ~= y.ord then return x.ord < y.ord end
    if x.key ~= y.key then return x.key < y.key end
    if x.sc ~= y.sc then return x.sc < y.sc end
    return x.m < y.m
  end)
  local customers, has = {}, false
  for i, x in ipairs(seen) do
    local sid = ssub(x.m, 27)
    if i <= DECISION_TOP or (sid == s.id and not has) then
      customers[#customers + 1] = {
        session = sid, group = x.g or s.g, via_group = null_or(x.via), kind = x.kind,
        tier = x.tier, ability = null_or(x.ab), virtual_arrival_ms = x.sc,
      }
      if sid == s.id then has = true end
    end
  end
  if kind == "parked" then
    s.pnote = {agent = ag.id, kind = s.pk, used = true, reason = "took its parked customer"}
  end
  s.dec = {
    side = "agent", customers = customers,
    candidates = {L.candidate_terms(ag, via_group or s.g, now, false)},
  }
end

-- Complete s.dec for the assignment to ag (L.assign) and return it; drops the stored
-- preference note (one HDEL, only when there was one).
function L.decision(s, ag, via, tier)
  local d = s.dec
  local ctx = s.ctx or context(s)
  local pn = s.pnote or ctx.pn
  d.agent, d.group, d.via, d.tier, d.open_tier = ag.id, s.g, via, tier, s.tr
  d.rule, d.preferred = null_or(ctx.rule), null_or(pn)
  if ctx.pn_stored then
    call("HDEL", K.session(s.id), "pn")
    ctx.pn, ctx.pn_stored = nil, nil
  end
  s.dec, s.pnote = nil, nil
  return d
end
