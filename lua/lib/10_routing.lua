--[[
  Routing helpers: agent rank, the customer-side and agent-side picks, assignment,
  queueing and parking (docs/routing.md).
]]
-- ------------------------------------------------------------------------- agent rank

-- Stored rank: the readiness formula without its `now` term, negated (lower is better).
function L.rank(ag, gc, ability)
  return (ag.last or 0) / 1000 - gc.k * (ag.cap - ag.load - gc.m * ag.pre) / ag.cap * ability
end

-- Put the agent into, or take it out of, the candidate set of each of its groups.
function L.refresh(ag)
  local sk = L.skills(ag)
  local candidate = ag.st == "online" and ag.load < ag.cap
  for i = 1, #sk, 2 do
    local g = sk[i]
    if candidate then
      local r = L.rank(ag, L.group(g), tonumber(sk[i + 1]))
      call("ZADD", K.ready(g), sfmt("%.17g", r), ag.id)
    else
      call("ZREM", K.ready(g), ag.id)
    end
  end
end

-- ------------------------------------------------------------------ customer side pick

-- Best candidate of group g that the customer does not block: id, rank.
local function top_agent(g, blocked)
  local key, i = K.ready(g), 0
  while true do
    local r = call("ZRANGE", key, i, i, "WITHSCORES")
    if #r == 0 then return nil end
    if not blocked[r[1]] then return r[1], tonumber(r[2]) end
    i = i + 1
  end
end

-- The agent a customer goes to: own group first, then tier 1..open tier. Returns id,
-- tier, the group it was found in, its rank.
function L.best_agent(s)
  local blocked = L.blocked(s)
  local a, ar = top_agent(s.g, blocked)
  if a then return a, 0, s.g, ar end
  local tiers = L.group(s.g).tiers
  for n = 1, s.tr do
    local tier = tiers[n]
    if not tier then break end
    local best, best_rank, best_group
    for _, h in ipairs(tier.groups) do
      local x, r = top_agent(h, blocked)
      if x and (not best or r < best_rank or (r == best_rank and x < best)) then
        best, best_rank, best_group = x, r, h
      end
    end
    if best then return best, n, best_group, best_rank end
  end
  return nil
end

-- --------------------------------------------------------------------- agent side pick

-- First member of zset `key` that does not block agent `aid`: member, score.
local function head(key, aid)
  local i = 0
  while true do
    local r = call("ZRANGE", key, i, i, "WITHSCORES")
    if #r == 0 then return nil end
    local m = r[1]
    if sbyte(m, 26) ~= 98 or call("SISMEMBER", K.blocked(member_session(m)), aid) == 0 then
      return m, tonumber(r[2])
    end
    i = i + 1
  end
end

-- Which customer the agent takes next: session id, kind ("parked"|"group"|"overflow"),
-- tier, and the agent's group it was found through (nil when parked). Each head it
-- compares is appended to `seen` (for a decision record, lua/lib/15_decisions.lua).
function L.pick_for_agent(ag, seen)
  local r = call("ZRANGE", K.parked(ag.id), 0, 0, "WITHSCORES")
  if #r > 0 then
    seen[#seen + 1] = {m = r[1], sc = tonumber(r[2]), kind = "parked", tier = 0,
                       ord = 0, key = 0}
    return member_session(r[1]), "parked", 0
  end
  local sk = L.skills(ag)
  local bm, bs, bx, bg
  for i = 1, #sk, 2 do
    local ab = tonumber(sk[i + 1])
    local m, sc = head(K.queue(sk[i]), ag.id)
    if m then
      seen[#seen + 1] = {m = m, sc = sc, kind = "group", tier = 0, ab = ab, via = sk[i],
                         g = sk[i], ord = 1, key = -ab}
      if not bm or ab > bx or (ab == bx and (sc < bs or (sc == bs and m < bm))) then
        bm, bs, bx, bg = m, sc, ab, sk[i]
      end
    end
  end
  if bm then return member_session(bm), "group", 0, bg end
  local mine, lowest, through = {}, {}, {}
  for i = 1, #sk, 2 do mine[sk[i]] = true end
  for i = 1, #sk, 2 do
    local src = call("HGETALL", K.sources(sk[i]))
    for j = 1, #src, 2 do
      local S, n = src[j], tonumber(src[j + 1])
      if not mine[S] and (not lowest[S] or n < lowest[S]) then
        lowest[S], through[S] = n, sk[i]
      end
    end
  end
  for S, n in pairs(lowest) do -- any order: the comparison below is total
    local m, sc = head(K.overflow(S, n), ag.id)
    if m then
      seen[#seen + 1] = {m = m, sc = sc, kind = "overflow", tier = n, via = through[S],
                         g = S, ord = 2, key = n}
      if not bm or n < bx or (n == bx and (sc < bs or (sc == bs and m < bm))) then
        bm, bs, bx, bg = m, sc, n, through[S]
      end
    end
  end
  if bm then return member_session(bm), "overflow", bx, bg end
  return nil
end

-- -------------------------------------------------------------------- state changes

-- HSET of the session's hash with fields `...`, and the fields an arrival left to write
-- (s.pending: a new session is written in one call, by whichever of assign, route or park
-- comes first; later fields of the same name win).
local function write_session(s, ...)
  local p = s.pending
  if p then
    s.pending = nil
    local args = {"HSET", K.session(s.id)}
    for i = 1, #p do args[#args + 1] = p[i] end
    local more = {...}
    for i = 1, #more do args[#args + 1] = more[i] end
    call(unpack(args))
  else
    call("HSET", K.session(s.id), ...)
  end
end

-- Take the session out of whatever queue it waits in (group queue + overflow sets, or an
-- agent's parked set) and drop its timers.
function L.unqueue(s)
  if s.q == "g" then
    call("ZREM", K.queue(s.g), s.m)
    for n = 1, s.tr do call("ZREM", K.overflow(s.g, n), s.m) end
    call("ZREM", K.due_overflow(), s.id)
  elseif s.q == "a" then
    call("ZREM", K.parked(s.pf), s.m)
    call("ZREM", K.due_preference(), s.id)
  end
  s.q = ""
end

function L.assign(s, ag, via, tier, now, ev)
  L.unqueue(s)
  s.st, s.ag = "assigned", ag.id
  write_session(s, "st", "assigned", "ag", ag.id, "q", "", "pf", "",
    "tr", s.tr, "asg", sfmt("%d", now), "ph", "waiting_agent", "pa", sfmt("%d", now))
  call("SADD", K.agent_sessions(ag.id), s.id)
  -- the decision record (s.dec, made by the caller while the agents were as compared)
  local decision = s.dec and L.decision(s, ag, via, tier) or nil
  ag.load, ag.last = ag.load + 1, now
  L.save_agent(ag)
  L.refresh(ag)
  L.count_served(s.g, now)
  L.on_waiting_agent(s, now, true)
  ev[#ev + 1] = {
    event = "assigned", session = s.id, agent = ag.id, group = s.g, tier = tier, via = via,
    wait_ms = now - s.at, decision = decision,
  }
end

local function queued_event(s, reason, key, parked_with)
  return {
    event = "queued", session = s.id, group = s.g, virtual_arrival_ms = s.va,
    priority = s.p, position = call("ZRANK", key, s.m) + 1, reason = reason,
    parked_with = parked_with,
  }
end

-- The open tier a real wait of `wait` ms has earned, starting from tier `from`.
function L.earned_tier(tiers, from, wait)
  local tr = from
  while tiers[tr + 1] and tiers[tr + 1].after_ms <= wait do tr = tr + 1 end
  return tr
end

-- (Re)schedule the session's next overflow step, or drop it after the last tier.
function L.schedule_overflow(s, tiers)
  local nxt = tiers[s.tr + 1]
  if nxt then
    call("ZADD", K.due_overflow(), sfmt("%d", s.at + nxt.after_ms), s.id)
    L.scheduled(s.at + nxt.after_ms)
  else
    call("ZREM", K.due_overflow(), s.id)
  end
end

-- Give the session to the best candidate of its pool, if there is one; true if assigned.
function L.to_best_agent(s, now, ev)
  local a, tier, g, rank = L.best_agent(s)
  if not a then return false end
  if L.records(s) then
    L.decide_customer(s, tier == 0 and {s.g} or L.group(s.g).tiers[tier].groups,
                      {a = a, g = g, rank = rank}, now)
  end
  L.assign(s, L.agent(a), tier == 0 and "group" or "overflow", tier, now, ev)
  return true
end

-- Up to `limit` members of the due zset `key` whose time has come, earliest first.
function L.due(key, now, limit)
  return call("ZRANGEBYSCORE", key, "-inf", sfmt("%d", now), "LIMIT", 0, limit)
end

-- Route a session that waits nowhere in its group s.g: open the tiers its real wait has
-- earned, give it to the best agent of its pool, or queue it.
function L.route(s, now, reason, ev)
  local gc = L.group(s.g)
  s.tr = L.earned_tier(gc.tiers, 0, now - s.at)
  local note -- a preferred agent not used: said by this decision or, if queued, a later one
  if gc.rd then
    if not s.pnote and s.pf and s.pf ~= "" and (reason == "fallback" or reason == "agent_offline") then
      s.pnote = {agent = s.pf, kind = s.pk or "directed", used = false,
                 reason = reason == "fallback" and "preference_ms passed" or "went offline"}
    end
    note = s.pnote
  end
  if L.to_best_agent(s, now, ev) then return end
  s.pnote = nil
  s.va, s.q, s.st = s.at - s.p * gc.u, "g", "queued"
  call("ZADD", K.queue(s.g), s.va, s.m)
  for n = 1, s.tr do call("ZADD", K.overflow(s.g, n), s.va, s.m) end
  -- a session being routed has no due step (unqueue dropped it): only add the next one
  if gc.tiers[s.tr + 1] then L.schedule_overflow(s, gc.tiers) end
  -- the queue phase is written with the rest: entered now, or kept as it was
  local pa = s.ph == "queued" and s.pa or now
  if note then
    write_session(s, "st", "queued", "g", s.g, "q", "g", "tr", s.tr,
      "va", sfmt("%d", s.va), "ag", "", "pf", "", "ph", "queued", "pa", sfmt("%d", pa),
      "pn", L.note_text(note))
    if s.ctx then s.ctx.pn, s.ctx.pn_stored = note, true end
  else
    write_session(s, "st", "queued", "g", s.g, "q", "g", "tr", s.tr,
      "va", sfmt("%d", s.va), "ag", "", "pf", "", "ph", "queued", "pa", sfmt("%d", pa))
  end
  L.on_queued(s, now, true)
  ev[#ev + 1] = queued_event(s, reason, K.queue(s.g))
end

-- Park a session with its preferred agent until `due`.
function L.park(s, ag, kind, due, reason, ev)
  s.va, s.q, s.pf, s.st, s.tr = s.at - s.p * L.group(s.g).u, "a", ag.id, "queued", 0
  call("ZADD", K.parked(ag.id), s.va, s.m)
  call("ZADD", K.due_preference(), sfmt("%d", due), s.id)
  L.scheduled(due)
  write_session(s, "st", "queued", "q", "a", "pf", ag.id, "pk", kind,
    "va", sfmt("%d", s.va), "tr", 0, "ag", "")
  L.on_queued(s, L.now)
  ev[#ev + 1] = queued_event(s, reason, K.parked(ag.id), ag.id)
end

-- The agent takes customers while it is online with free capacity; returns how many.
function L.fill(ag, now, ev)
  local n = 0
  while ag.st == "online" and ag.load < ag.cap do
    local seen = {}
    local sid, kind, tier, via_group = L.pick_for_agent(ag, seen)
    if not sid then return n end
    local s = L.session(sid)
    if L.records(s) then L.decide_agent(s, ag, seen, kind, via_group, now) end
    L.assign(s, ag, kind == "parked" and s.pk or kind, tier, now, ev)
    n = n + 1
  end
  return n
end

-- An agent that just freed capacity takes customers, and its place among the candidates
-- is written once: by the last assignment (L.assign), or here when it took nobody. (The
-- agent-side pick reads queues, never the candidate sets, so writing it before the pick
-- as well would only be overwritten.)
function L.refill(ag, now, ev)
  if L.fill(ag, now, ev) == 0 then L.refresh(ag) end
end


-- ------------------------------------------------------------------ service rate, ETA

-- Customers of a group served per second: an exponentially decayed count (time
-- constant RATE_TAU_MS), updated on every assignment of one of the group's customers.
local RATE_TAU_MS = 300000

local function decayed_rate(g, now)
  local r = call("HMGET", K.group_rate(g), "r", "t")
  local rate, at = tonumber(r[1]) or 0, tonumber(r[2]) or now
  return rate * math.exp(-math.max(now - at, 0) / RATE_TAU_MS)
end

function L.count_served(g, now)
  local rate = decayed_rate(g, now) + 1000 / RATE_TAU_MS
  call("HSET", K.group_rate(g), "r", sfmt("%.17g", rate), "t", sfmt("%d", now))
end

-- Expected wait (ms) of the customer at `position` in group g who has waited `wait` ms:
-- position / (the group's service rate + the rate of every overflow tier group that will
-- be open by then and has nobody of its own waiting). nil when nobody was served lately.
function L.eta(g, position, wait, now)
  local gc, own = L.group(g), decayed_rate(g, now)
  local eta = own > 0 and position / own * 1000 or nil
  for _ = 1, 2 do
    local rate = own
    for _, tier in ipairs(gc.tiers) do
      if tier.after_ms > wait + (eta or 1e15) then break end
      for _, h in ipairs(tier.groups) do
        if call("ZCARD", K.queue(h)) == 0 then rate = rate + decayed_rate(h, now) end
      end
    end
    if rate <= 0 then return nil end
    eta = position / rate * 1000
  end
  if eta ~= eta or eta > 1e12 then return nil end -- served nobody for ages: no estimate
  return math.floor(eta + 0.5)
end

-- ---------------------------------------------------------------- routing rules (2.1)

local function condition_holds(c, v)
  if type(c) ~= "table" then return c == v end
  if c[1] ~= nil then
    for _, x in ipairs(c) do if x == v then return true end end
    return false
  end
  return type(v) == "number" and (not c.min or v >= c.min) and (not c.max or v <= c.max)
end

-- The first rule (configure_rules.lua) all of whose conditions hold for `attrs`, or nil.
-- Also returns its 1-based position.
function L.match_rule(attrs)
  local packed = call("HGET", K.tenant(), "rules")
  if not packed then return nil end
  for i, r in ipairs(cmsgpack.unpack(packed)) do
    local ok = true
    for k, c in pairs(r.match) do
      if not condition_holds(c, attrs[k]) then ok = false break end
    end
    if ok then return r, i end
  end
  return nil
end
