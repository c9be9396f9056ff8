--[[
  Create or replace a skill group's routing settings.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it (keys.py)
  ARGV[1] now_ms       int    caller's clock (never TIME: replays and simulations stay
                              deterministic)
  ARGV[2] command      msgpack map {group, k=60.0, m=0.5, priority_unit_ms=60000,
                              tiers=[{after_ms, groups=[...]}...], sticky_ms=0,
                              preference_ms=60000, service_level_target=0.8, and
                              the lifecycle timers and service_level_ms=20000 of
                              TIMER_FIELDS below (ms, 0 = off), record_decisions=false}
  Touches: group hash, its members' ranks ({t}:g:<g>:r), the reverse overflow map
           ({t}:g:<h>:src) of every group named in the old or new tiers.
  Returns: msgpack [{event="group_configured", group}, then assigned events of
           re-evaluated customers]
  Errors:  "E_BAD_ID group", "E_BAD_ARG <field>", "E_GROUP_UNKNOWN <tier group>",
           "E_BAD_TIER <why>"
  Queued customers keep their virtual arrival. When the tiers change, each customer
  queued in the group is re-evaluated in service order: its open tier becomes the number
  of new tiers its real wait has earned (never fewer than it had, capped at the new
  count), its next overflow step is rescheduled, and it is given to a candidate of its new
  pool if there is one. That costs one pass over this group's queue; other changes cost
  one pass over the group's members.
]]

-- Re-evaluate every customer queued in group g against its new tiers (service order).
local function recheck_queue(g, now, ev)
  local tiers = L.group(g).tiers
  for _, m in ipairs(call("ZRANGE", K.queue(g), 0, -1)) do
    local s = L.session(ssub(m, 27))
    local tr = L.earned_tier(tiers, math.min(s.tr, #tiers), now - s.at)
    for n = tr + 1, s.tr do call("ZREM", K.overflow(g, n), m) end
    for n = 1, tr do call("ZADD", K.overflow(g, n), s.va, m) end
    s.tr = tr
    call("HSET", K.session(s.id), "tr", tr)
    L.schedule_overflow(s, tiers)
    L.to_best_agent(s, now, ev)
  end
end

-- command field -> {key in the group's timer map, default ms}
local TIMER_FIELDS = {
  queue_warning_ms = {"qwarn", 60000}, queue_timeout_ms = {"qtimeout", 0},
  position_update_ms = {"posint", 0}, reply_sla_ms = {"sla", 60000},
  reply_reassign_ms = {"reassign", 0}, silence_remind_ms = {"sremind", 120000},
  silence_preclose_ms = {"spreclose", 300000}, silence_close_ms = {"sclose", 1800000},
  confirm_close_ms = {"cclose", 300000},
  -- not a timer: the service-level threshold (answered within it counts as "in SL")
  service_level_ms = {"slms", 20000},
  -- tickets (docs/tickets.md): reassign a ticket its handler has not touched for this
  -- long; spread the tickets held overnight over the agents coming on shift for this long
  ticket_reassign_ms = {"treassign", 14400000}, ticket_release_spread_ms = {"tspread", 900000},
}

OPS.configure_group = function(now, a)
  local g = L.id(a.group, "group")
  local k = L.num(a.k or 60.0, 0, 1e9, "k")
  local m = L.num(a.m or 0.5, 0, 1e6, "m")
  local u = L.int(a.priority_unit_ms or 60000, 0, 1e9, "priority_unit_ms")
  local sticky = L.int(a.sticky_ms or 0, 0, 1e11, "sticky_ms")
  local pref = L.int(a.preference_ms or 60000, 0, 1e11, "preference_ms")
  local timers = {}
  for field, spec in pairs(TIMER_FIELDS) do
    timers[spec[1]] = L.int(a[field] or spec[2], 0, 1e11, field)
  end
  timers.slt = L.num(a.service_level_target or 0.8, 0, 1, "service_level_target")
  -- not a timer either: record why each session goes to its agent (L.decision)
  local rd = a.record_decisions or false
  if type(rd) ~= "boolean" then L.fail("E_BAD_ARG", "record_decisions") end
  if rd then timers.rd = true end
  local tiers, seen, last_after = {}, {}, -1
  for n, t in ipairs(L.list(a.tiers, 16, "tiers")) do
    if type(t) ~= "table" then L.fail("E_BAD_ARG", "tiers") end
    local after = L.int(t.after_ms, 0, 1e11, "tiers.after_ms")
    if after <= last_after then L.fail("E_BAD_TIER", "after_ms must increase") end
    last_after = after
    local groups = L.list(t.groups, 64, "tiers.groups")
    if #groups == 0 then L.fail("E_BAD_ARG", "tiers.groups") end
    for _, h in ipairs(groups) do
      L.id(h, "tiers.groups")
      if h == g then L.fail("E_BAD_TIER", "a group cannot overflow to itself") end
      if seen[h] then L.fail("E_BAD_TIER", "group repeated: " .. h) end
      if not L.group(h) then L.fail("E_GROUP_UNKNOWN", h) end
      seen[h] = n
    end
    tiers[n] = {after_ms = after, groups = groups}
  end

  local old = L.group(g)
  local packed = cmsgpack.pack(tiers)
  local tiers_changed = old and cmsgpack.pack(old.tiers) ~= packed
  if old then
    for _, t in ipairs(old.tiers) do
      for _, h in ipairs(t.groups) do call("HDEL", K.sources(h), g) end
    end
  end
  for h, n in pairs(seen) do call("HSET", K.sources(h), g, n) end
  call("HSET", K.group(g), "k", sfmt("%.17g", k), "m", sfmt("%.17g", m), "u", u,
    "sticky", sfmt("%d", sticky), "pref", sfmt("%d", pref), "tiers", packed,
    "timers", cmsgpack.pack(timers))
  call("SADD", K.groups(), g)
  L.forget_group(g)
  local members = call("HGETALL", K.members(g))
  for i = 1, #members, 2 do L.refresh(L.agent(members[i])) end
  -- its settings or service hours may have changed: look at its waiting tickets again
  if call("ZCARD", K.ticket_queue(g)) > 0 then L.ticket_wake(g, now) end
  local ev = {{event = "group_configured", group = g}}
  if tiers_changed then recheck_queue(g, now, ev) end
  return ev
end
