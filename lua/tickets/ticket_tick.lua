--[[
  Fire the ticket timers due at now_ms (up to `limit`), in due order, then purge closed
  tickets past the tenant's ticket retention (up to `limit`):
    gq:<group>  look at the group's waiting tickets: while it is outside its service
                hours, hold those still queued when its shift ended (ticket_held, reason
                "shift_end") and look again when it opens; when a shift starts, its held
                tickets are released (queued) and spread over the members coming on shift: for
                the group's ticket_release_spread_ms, each member takes at most
                ceil(held / members) of them; then they go to the eligible members
    ra:<id>     the handler has not touched the ticket for the group's
                ticket_reassign_ms: another eligible member takes it (same preference
                order, never the same handler); outside service hours the check moves to
                the next opening plus that time; without another eligible member it
                stays and is checked again after that time
    fr:<id>     first response due and not given: the ticket is overdue
    rs:<id>     resolution due and not closed: the ticket is overdue
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {limit=100}
  Returns: msgpack list of the events caused, in order
  Errors:  "E_BAD_ARG limit"
]]
local DAY_MS = 86400000

local function reassign(t, now, ev)
  if t.st ~= "assigned" then return end
  local ra = L.group(t.g).treassign or 0
  if ra <= 0 then return end
  if now < t.asg + ra then -- not untouched for long enough (assigned again since)
    L.ticket_timer("ra", t.id, t.asg + ra)
    return
  end
  if not L.in_hours(t.g, now) then
    L.ticket_timer("ra", t.id, L.next_open(t.g, now) + ra)
    return
  end
  local before = #ev
  L.ticket_reassign(t, now, ev)
  if #ev == before then L.ticket_timer("ra", t.id, now + ra) end
end

local function overdue(t, kind, now, ev)
  if t.st == "closed" then return end
  if kind == "first_response" then
    if (t.fr or "") ~= "" then return end
    call("HSET", K.ticket(t.id), "brf", "1")
  else
    call("HSET", K.ticket(t.id), "brr", "1")
  end
  call("ZADD", K.tickets_overdue(), "NX", sfmt("%d", now), t.id)
  ev[#ev + 1] = {event = "ticket_overdue", ticket = t.id, kind = kind, group = t.g,
                 type = t.ty, agent = t.ag ~= "" and t.ag or nil,
                 due_ms = kind == "first_response" and t.frd or t.rsd}
end

local function purge(now, limit)
  local oldest = call("ZRANGE", K.tickets_closed(), 0, 0, "WITHSCORES")
  if #oldest == 0 then return end -- every tick: one call when nothing is closed
  local keep = tonumber(call("HGET", K.tenant(), "ticket_retention_ms")) or 90 * DAY_MS
  if tonumber(oldest[2]) > now - keep then return end
  local old = call("ZRANGEBYSCORE", K.tickets_closed(), "-inf", sfmt("%d", now - keep),
    "LIMIT", 0, limit)
  for _, id in ipairs(old) do
    local r = call("HMGET", K.ticket(id), "g", "o")
    call("ZREM", K.tickets(), id)
    call("ZREM", K.ticket_state("closed"), id)
    if r[1] then call("ZREM", K.group_tickets(r[1]), id) end
    if r[2] and r[2] ~= "" then
      call("ZREM", K.order_tickets(r[2]), id)
      -- the order's last ticket is gone: forget its owner and handlers too
      if call("EXISTS", K.order_tickets(r[2])) == 0 then
        call("DEL", K.order(r[2]), K.order_handlers(r[2]))
      end
    end
    call("DEL", K.ticket(id), K.ticket_history(id), K.ticket_hops(id), K.ticket_visits(id))
    call("ZREM", K.tickets_closed(), id)
  end
end

local FIRE = {
  ra = reassign,
  fr = function(t, now, ev) overdue(t, "first_response", now, ev) end,
  rs = function(t, now, ev) overdue(t, "resolution", now, ev) end,
}

OPS.ticket_tick = function(now, a)
  local limit = L.int(a.limit or 100, 1, 10000, "limit")
  local ev = {}
  for _, m in ipairs(L.due(K.ticket_due(), now, limit)) do
    call("ZREM", K.ticket_due(), m)
    local kind, id = m:match("^(%w+):(.*)$")
    if kind == "gq" then
      L.ticket_check_group(id, now, ev)
    else
      local t = L.ticket(id)
      if t and FIRE[kind] then FIRE[kind](t, now, ev) end
    end
  end
  purge(now, limit)
  return ev
end
