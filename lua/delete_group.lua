--[[
  Delete a skill group. Refused while anything still depends on it: open sessions of the
  group (queued, parked, assigned or pre-closed) or open tickets in it, another group that
  overflows into it,
  or a routing rule that sends customers to it. Its members lose that ability; their
  other groups are untouched.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {group}
  Touches: the group's hash, queue, ranking, members, overflow sets, reverse overflow
           map, service rate, ticket queue, release and ticket-eligible agents; the
           skills of its members; the group set.
  Returns: msgpack [{event="group_deleted", group}]
  Errors:  "E_BAD_ID group", "E_GROUP_UNKNOWN <id>", "E_GROUP_BUSY <n> open sessions",
           "E_GROUP_IN_USE <what uses it>"
]]
OPS.delete_group = function(now, a)
  local g = L.id(a.group, "group")
  local gc = L.group(g)
  if not gc then L.fail("E_GROUP_UNKNOWN", g) end
  local open = math.max(tonumber(call("HGET", K.group_open(), g)) or 0, call("ZCARD", K.queue(g)))
  if open > 0 then L.fail("E_GROUP_BUSY", open .. " open sessions") end
  local tickets = tonumber(call("HGET", K.tickets_open(), g)) or 0
  if tickets > 0 then L.fail("E_GROUP_BUSY", tickets .. " open tickets") end
  local sources = call("HKEYS", K.sources(g))
  if #sources > 0 then
    table.sort(sources)
    L.fail("E_GROUP_IN_USE", "overflow tier of " .. table.concat(sources, ","))
  end
  local packed = call("HGET", K.tenant(), "rules")
  for i, r in ipairs(packed and cmsgpack.unpack(packed) or {}) do
    if r.group == g then L.fail("E_GROUP_IN_USE", "routing rule " .. (r.name or tostring(i))) end
  end

  for _, t in ipairs(gc.tiers) do
    for _, h in ipairs(t.groups) do call("HDEL", K.sources(h), g) end
  end
  for _, agent in ipairs(call("HKEYS", K.members(g))) do call("HDEL", K.skills(agent), g) end
  local doomed = {K.group(g), K.members(g), K.ready(g), K.queue(g), K.sources(g), K.group_rate(g),
    K.ticket_queue(g), K.ticket_ramp(g), K.group_agents(g), K.ticket_agents(g)}
  for n = 1, #gc.tiers do doomed[#doomed + 1] = K.overflow(g, n) end
  call("DEL", unpack(doomed))
  call("HDEL", K.group_open(), g)
  call("HDEL", K.tickets_open(), g)
  call("HDEL", K.tickets_held(), g)
  call("HDEL", K.ticket_agents_built(), g)
  call("ZREM", K.ticket_due(), "gq:" .. g)
  call("SREM", K.groups(), g)
  L.forget_group(g)
  return {{event = "group_deleted", group = g}}
end
