--[[
  Tickets: back-office work items addressed to a group and handled by one of its members
  (SPEC §4, docs/tickets.md). Included after lua/lib/ in the ticket scripts, the gateway
  batch, the admin change and apply_batch.

  Ticket hash {t}:tk:<id>:
    st   held | queued | assigned | in_progress | closed
         held: waiting while its group is outside its service hours; queued: waiting in
         hours for an eligible member; assigned: with a handler who has not touched it
         yet; in_progress: its handler has worked on it
    ty type, g current group, ag handler ("" none), o order id ("" none), p priority,
    at created ms, by creator, ti title, f msgpack fields, ga ms it entered g,
    va its queue score in g, asg ms assigned to ag, fr ms of the first response ("" none),
    frd / rsd first-response / resolution due ms (0 none), brf / brr "1" once breached,
    hops forwards so far, ct ms closed, cb closed by, res resolution
  The SLA clock starts at creation and runs across hops: forwarding never resets it.

  Eligible handler for a ticket of group g (docs/tickets.md "Assignment"): a member of g,
  on shift (status online or away), with fewer open tickets than its ticket limit
  (agent field tlim) and, during g's shift-start release, fewer than its share. The first
  three are membership of g's ticket-eligible set {t}:g:<g>:tka (lua/lib/30_ticket_hook.lua),
  which orders them as the balanced pick does; the share is looked up per agent.
]]
local TICKET_STATES = {"held", "queued", "assigned", "in_progress", "closed"}
local HANDLED_MAX = 10000
local DISPATCH_MAX = 500 -- tickets assigned from one group queue per call
local SCAN = 16 -- ticket-eligible agents read at a time when some may be passed over
local POLL_MS = 60000 -- a group with waiting tickets is looked at least this often
local DAY_MS = 86400000
L.TICKET_STATES = TICKET_STATES

function L.ticket(id)
  local r = call("HGETALL", K.ticket(id))
  if #r == 0 then return nil end
  local t = {id = id}
  for i = 1, #r, 2 do t[r[i]] = r[i + 1] end
  t.p, t.at, t.ga = tonumber(t.p), tonumber(t.at), tonumber(t.ga)
  t.asg, t.hops = tonumber(t.asg), tonumber(t.hops) or 0
  t.frd, t.rsd = tonumber(t.frd) or 0, tonumber(t.rsd) or 0
  return t
end

function L.open_ticket(v)
  local id = L.id(v, "ticket")
  local t = L.ticket(id)
  if not t then L.fail("E_TICKET_UNKNOWN", id) end
  if t.st == "closed" then L.fail("E_TICKET_STATE", "closed") end
  return t
end

-- Move the ticket to state `st` (its hash and the per-state index).
-- A ticket's group counts its held tickets ({t}:tkheld), so the look at a group's queue
-- scans it for held (or not yet held) tickets only when there are some; a ticket that
-- left its group while held (t.left, L.ticket_leave) was uncounted there already.
function L.ticket_state(t, st)
  if t.st then
    call("ZREM", K.ticket_state(t.st), t.id)
    if t.st == "held" and not t.left then call("HINCRBY", K.tickets_held(), t.g, -1) end
  end
  if st == "held" then call("HINCRBY", K.tickets_held(), t.g, 1) end
  call("ZADD", K.ticket_state(st), sfmt("%d", t.at), t.id)
  call("HSET", K.ticket(t.id), "st", st)
  t.st = st
end

function L.ticket_timer(kind, id, due)
  call("ZADD", K.ticket_due(), sfmt("%d", due), kind .. ":" .. id)
  L.scheduled(due)
end

-- ----------------------------------------------------------------- service hours

--[[
  Lua cannot do time zones, so the admin API and the daemon store each group's service
  hours as UTC intervals (field "win" of the group: msgpack {hz = horizon ms, iv = flat
  [start, end, ...]}, computed by dispatchd/hours.py for the coming weeks). No "win":
  the group has no service hours and is always in service. Past the horizon (the daemon
  stopped refreshing) the group counts as in service rather than holding tickets forever.
]]
function L.windows(g)
  local gc = L.group(g)
  if gc.win == nil then
    local raw = call("HGET", K.group(g), "win")
    gc.win = raw and cmsgpack.unpack(raw) or false
  end
  return gc.win
end

function L.in_hours(g, now)
  local w = L.windows(g)
  if not w or now >= w.hz then return true end
  local iv = w.iv
  for i = 1, #iv - 1, 2 do
    if now < iv[i] then return false end
    if now < iv[i + 1] then return true end
  end
  return false
end

-- When group g is next in service at or after now (the horizon when nothing opens
-- before it: the group is looked at again then).
function L.next_open(g, now)
  local w = L.windows(g)
  if not w or now >= w.hz then return now end
  local iv = w.iv
  for i = 1, #iv - 1, 2 do
    if now < iv[i + 1] then return math.max(iv[i], now) end
  end
  return w.hz
end

-- ------------------------------------------------------------------ candidates

-- The group's shift-start release, while it lasts: {share = n, till = ms it ends}, else nil.
local function ramp_of(g, now)
  local r = call("HMGET", K.ticket_ramp(g), "#until", "#share")
  local till = tonumber(r[1])
  if till and now < till then return {share = tonumber(r[2]), till = till} end
  return nil
end

-- Build group g's ticket-eligible set from its members (O(members)) unless {t}:tkab says
-- it was built: a group older than these sets gets it at its first use (one made since
-- has it exact from the start, and is only marked then). `force`: build it anew
-- (recount_agents; a look at the group that finds nobody eligible).
function L.ticket_agents_ready(g, force)
  if not force and call("HEXISTS", K.ticket_agents_built(), g) == 1 then return end
  call("DEL", K.ticket_agents(g))
  local only = {g}
  for _, aid in ipairs(call("HKEYS", K.members(g))) do L.ticket_agent(aid, nil, only) end
  call("HSET", K.ticket_agents_built(), g, "1")
end

-- Whether agent aid is eligible for a ticket of group g: in its ticket-eligible set and,
-- during its shift-start release, under its share. O(log members).
local function eligible(g, aid, ramp)
  local tka = tonumber(call("HGET", K.agent(aid), "tka")) or 0
  if not call("ZSCORE", K.ticket_agents(g), L.ticket_member(tka, aid)) then return false end
  return not ramp or (tonumber(call("HGET", K.ticket_ramp(g), aid)) or 0) < ramp.share
end

-- The least loaded eligible member of group g other than `exclude` (fewest open tickets,
-- then longest since its last ticket, then id), nil when there is none: the first of its
-- ticket-eligible set, O(log members). During a shift-start release, the members that
-- took their share are passed over, read SCAN at a time with their takes. The walk
-- passes only members that took their share and rank before the first that did not
-- (fewer open tickets than it, or as many and an earlier last ticket: members whose
-- older tickets are fewer), so it costs at most 1 + members/SCAN reads, and only for
-- ticket_release_spread_ms after a shift start.
local function least_loaded(g, ramp, exclude)
  local key, from, n = K.ticket_agents(g), 0, 2
  while true do
    local ms = call("ZRANGE", key, from, from + n - 1)
    local ids = {}
    for i = 1, #ms do ids[i] = ssub(ms[i], 16) end
    local taken = (ramp and #ids > 0) and call("HMGET", K.ticket_ramp(g), unpack(ids)) or {}
    for i, aid in ipairs(ids) do
      if aid ~= exclude and (not ramp or (tonumber(taken[i]) or 0) < ramp.share) then
        return aid
      end
    end
    if #ms < n then return nil end
    from, n = from + n, SCAN
  end
end

-- Who of group g's eligible members takes ticket t: the order's owner, else the latest
-- earlier handler of the order (of its latest 100), else `least` (least_loaded's pick).
-- `exclude` (an agent id) is never chosen. Returns the agent and via.
local function pick(t, g, ramp, exclude, least)
  if t.o and t.o ~= "" then
    local owner = call("HGET", K.order(t.o), "owner")
    if owner and owner ~= exclude and eligible(g, owner, ramp) then return owner, "owner" end
    for _, aid in ipairs(call("ZREVRANGE", K.order_handlers(t.o), 0, 99)) do
      if aid ~= exclude and eligible(g, aid, ramp) then return aid, "order_history" end
    end
  end
  return least, "balanced"
end

-- ------------------------------------------------------------------ transitions

-- Give ticket t to agent `aid` (previous: the handler it is taken from, if any).
function L.ticket_assign(t, aid, via, reason, now, ev, previous)
  call("ZREM", K.ticket_queue(t.g), t.id)
  if previous then call("ZREM", K.agent_tickets(previous), t.id) end
  L.ticket_state(t, "assigned")
  t.ag, t.asg = aid, now
  call("HSET", K.ticket(t.id), "ag", aid, "asg", sfmt("%d", now))
  call("ZADD", K.agent_tickets(aid), sfmt("%d", t.at), t.id)
  if call("ZADD", K.agent_handled(aid), sfmt("%d", now), t.id) == 1 then
    call("ZREMRANGEBYRANK", K.agent_handled(aid), 0, -HANDLED_MAX - 1)
  end
  local last = tonumber(call("HGET", K.agent(aid), "tka")) or 0
  call("HSET", K.agent(aid), "tka", sfmt("%d", now))
  L.ticket_agent(aid, last) -- one more open ticket, a new last assignment
  if previous then L.ticket_agent(previous) end -- one fewer
  if t.o ~= "" then call("ZADD", K.order_handlers(t.o), sfmt("%d", now), aid) end
  local ra = L.group(t.g).treassign or 0
  if ra > 0 then
    L.ticket_timer("ra", t.id, now + ra)
  else
    call("ZREM", K.ticket_due(), "ra:" .. t.id)
  end
  ev[#ev + 1] = {event = "ticket_assigned", ticket = t.id, group = t.g, agent = aid, via = via,
                 reason = reason, previous_agent = previous, wait_ms = now - t.ga}
end

-- Give ticket t, untouched by its handler, to another eligible member of its group (same
-- preference order, never the same handler). Nothing happens when there is none.
function L.ticket_reassign(t, now, ev)
  L.ticket_agents_ready(t.g)
  local least = least_loaded(t.g, nil, t.ag)
  if not least then return end
  local aid, via = pick(t, t.g, nil, t.ag, least)
  local previous = t.ag
  L.ticket_assign(t, aid, via, "untouched", now, ev, previous)
  L.wake_tickets(previous, now)
end

-- Assign group g's waiting tickets, in queue order, to its eligible members (at most
-- DISPATCH_MAX; the rest at the next tick). `reason` goes on the assigned events; with
-- `own` (the ticket entering the group) only on that one's, the others are "queue".
function L.ticket_dispatch(g, now, ev, reason, own)
  local qkey = K.ticket_queue(g)
  if call("ZCARD", qkey) == 0 or not L.in_hours(g, now) then return end
  local ramp = ramp_of(g, now)
  L.ticket_agents_ready(g)
  local n = 0
  while n < DISPATCH_MAX do
    local head = call("ZRANGE", qkey, 0, 0)[1]
    if not head then break end
    local least = least_loaded(g, ramp, nil)
    if not least then break end
    local t = L.ticket(head)
    local aid, via = pick(t, g, ramp, nil, least)
    L.ticket_assign(t, aid, via, (own == nil or head == own) and reason or "queue", now, ev)
    n = n + 1
    if ramp then call("HINCRBY", K.ticket_ramp(g), aid, 1) end
  end
  if call("ZCARD", qkey) > 0 then
    -- the group has one wake-up: a poll must not push back the end of a release's cap
    local due = n >= DISPATCH_MAX and now or now + POLL_MS
    L.ticket_wake(g, ramp and math.min(due, ramp.till) or due)
  end
end

-- Look at group g's waiting tickets (its "gq" wake-up, lua/tickets/ticket_tick.lua):
-- outside its service hours, look again when it opens; when a shift starts, release its
-- held tickets, spread over the members coming on shift; then assign what it can.
function L.ticket_check_group(g, now, ev)
  local gc = L.group(g)
  local qkey = K.ticket_queue(g)
  local waiting = call("ZCARD", qkey)
  if not gc or waiting == 0 then return end
  local held_now = tonumber(call("HGET", K.tickets_held(), g)) or 0
  if not L.in_hours(g, now) then
    -- tickets still waiting when the shift ended are held like those that came in after
    -- it: the next shift start releases them all, spread over its members
    local opens = L.next_open(g, now)
    for _, id in ipairs(held_now < waiting and call("ZRANGE", qkey, 0, -1) or {}) do
      if call("HGET", K.ticket(id), "st") == "queued" then
        L.ticket_state({id = id, g = g, st = "queued",
                        at = tonumber(call("HGET", K.ticket(id), "at"))}, "held")
        ev[#ev + 1] = {event = "ticket_held", ticket = id, group = g, reason = "shift_end",
                       until_ms = opens}
      end
    end
    L.ticket_wake(g, opens)
    return
  end
  local held = {}
  for _, id in ipairs(held_now > 0 and call("ZRANGE", qkey, 0, -1) or {}) do
    if call("HGET", K.ticket(id), "st") == "held" then
      held[#held + 1] = id
      L.ticket_state({id = id, g = g, st = "held",
                      at = tonumber(call("HGET", K.ticket(id), "at"))}, "queued")
    end
  end
  if #held > 0 then
    call("DEL", K.ticket_ramp(g))
    local spread = gc.tspread or 0
    if spread > 0 then
      local members = math.max(call("HLEN", K.members(g)), 1)
      call("HSET", K.ticket_ramp(g), "#until", sfmt("%d", now + spread),
        "#share", math.ceil(#held / members))
      call("PEXPIRE", K.ticket_ramp(g), spread + DAY_MS)
      L.ticket_wake(g, now + spread) -- the cap is lifted then
    end
  end
  -- the look is also the safety net for changes made behind the scripts' back (an
  -- operator's repair of an agent's ticket limit): when nobody is eligible by the group's
  -- ticket-eligible set, the set is built anew from its members (O(members), once per
  -- look: the minute's poll of a group with waiting tickets, or a wake-up)
  if call("ZCARD", K.ticket_agents(g)) == 0 then L.ticket_agents_ready(g, true) end
  L.ticket_dispatch(g, now, ev, #held > 0 and "shift_start" or "queue")
  for _, id in ipairs(held) do
    local pos = call("ZRANK", qkey, id)
    if pos then
      ev[#ev + 1] = {event = "ticket_queued", ticket = id, group = g, reason = "shift_start",
                     position = pos + 1}
    end
  end
end

-- Ticket t enters group g (created or forwarded): held outside g's service hours, else
-- assigned at once when a member is eligible, else queued.
function L.ticket_enter(t, g, now, reason, ev)
  local gc = L.group(g)
  t.g, t.ga, t.ag = g, now, ""
  local va = t.at - t.p * gc.u
  call("HSET", K.ticket(t.id), "g", g, "ga", sfmt("%d", now), "ag", "", "asg", "",
    "va", sfmt("%d", va))
  call("ZADD", K.group_tickets(g), sfmt("%d", t.at), t.id)
  call("HINCRBY", K.tickets_open(), g, 1)
  call("HINCRBY", K.ticket_visits(t.id), g, 1)
  if not L.in_hours(g, now) then
    call("ZADD", K.ticket_queue(g), sfmt("%d", va), t.id)
    L.ticket_state(t, "held")
    local opens = L.next_open(g, now)
    L.ticket_wake(g, opens)
    ev[#ev + 1] = {event = "ticket_held", ticket = t.id, group = g, reason = reason,
                   until_ms = opens}
    return
  end
  -- the group's look at its waiting tickets is due (a shift started, a member became
  -- eligible) and the tick has not come yet: that goes first, so the tickets already
  -- waiting keep their place and a shift start its spread
  local due = tonumber(call("ZSCORE", K.ticket_due(), "gq:" .. g))
  if due and due <= now then
    call("ZREM", K.ticket_due(), "gq:" .. g)
    L.ticket_check_group(g, now, ev)
  end
  call("ZADD", K.ticket_queue(g), sfmt("%d", va), t.id)
  L.ticket_state(t, "queued")
  L.ticket_dispatch(g, now, ev, reason, t.id)
  if call("HGET", K.ticket(t.id), "st") == "queued" then
    ev[#ev + 1] = {event = "ticket_queued", ticket = t.id, group = g, reason = reason,
                   position = call("ZRANK", K.ticket_queue(g), t.id) + 1}
  end
end

-- Ticket t leaves its group and handler (forwarded on, or closed when `closing`).
function L.ticket_leave(t, now, closing)
  call("ZREM", K.ticket_queue(t.g), t.id)
  if t.st == "held" then
    call("HINCRBY", K.tickets_held(), t.g, -1)
    t.left = true
  end
  call("HINCRBY", K.tickets_open(), t.g, -1)
  if not closing then call("ZREM", K.group_tickets(t.g), t.id) end
  call("ZREM", K.ticket_due(), "ra:" .. t.id)
  if t.ag ~= "" then
    call("ZREM", K.agent_tickets(t.ag), t.id)
    L.ticket_agent(t.ag) -- one fewer open ticket
    L.wake_tickets(t.ag, now) -- its freed slot takes waiting tickets of its groups
  end
end

-- Whether the ticket is overdue now: open, with an SLA target past due and unmet.
function L.ticket_overdue_check(t)
  local late = t.st ~= "closed" and ((t.brf == "1" and (t.fr or "") == "") or t.brr == "1")
  if not late then call("ZREM", K.tickets_overdue(), t.id) end
  return late
end

-- A ticket's summary for the ticket_status event (the gateway's view of a ticket).
function L.ticket_view(t)
  local fields = t.f and cmsgpack.unpack(t.f) or {}
  local overdue = call("ZSCORE", K.tickets_overdue(), t.id) ~= false
  return {
    event = "ticket_status", ticket = t.id, type = t.ty, state = t.st, group = t.g,
    agent = t.ag ~= "" and t.ag or nil, order_id = t.o ~= "" and t.o or nil, priority = t.p,
    created_ms = t.at, created_by = t.by, title = t.ti, hops = t.hops,
    first_response_ms = (t.fr or "") ~= "" and (tonumber(t.fr) - t.at) or nil,
    first_response_due_ms = t.frd > 0 and t.frd or nil,
    resolution_due_ms = t.rsd > 0 and t.rsd or nil, overdue = overdue,
    fields = next(fields) and fields or nil,
  }
end
