--[[
  L.prune_consumers: removes consumers of the tenant's inbound consumer group `group`
  that hold no pending entry: `own` (the caller's consumer, at its clean stop; "" for
  none) whatever its idle time, any other once it has been idle (XINFO CONSUMERS `idle`:
  no read or claim attempted) for `idle_ms` or more, the consumer of a daemon that is
  gone. One atomic call, so a consumer that reads between the check and the removal
  cannot lose its entries (XGROUP DELCONSUMER drops a consumer's pending entries: a
  consumer with any is never removed). Returns the names removed; nothing when the stream
  or the group does not exist.
]]
function L.prune_consumers(group, own, idle_arg)
  local idle_ms = tonumber(idle_arg)
  if type(group) ~= "string" or type(own) ~= "string" or not idle_ms then
    L.fail("E_BAD_ARG", "group, own consumer, idle_ms")
  end
  local stream = K.inbound()
  local list = redis.pcall("XINFO", "CONSUMERS", stream, group)
  if type(list) ~= "table" or list.err then return {} end
  local removed = {}
  for _, row in ipairs(list) do
    local c = {}
    for i = 1, #row - 1, 2 do c[row[i]] = row[i + 1] end
    if c.pending == 0 and (c.name == own or (c.idle or 0) >= idle_ms) then
      call("XGROUP", "DELCONSUMER", stream, group, c.name)
      removed[#removed + 1] = c.name
    end
  end
  return removed
end
