--[[
  Store a group's service hours as UTC intervals (computed by dispatchd/hours.py; Lua
  cannot do time zones), unless its service hours changed since they were read.
  The daemon refreshes every group's windows periodically (docs/tickets.md).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {group, meta_sha1 (SHA1 hex of the group's stored
                       "meta" field the windows were computed from), windows={hz,
                       iv=[start, end, ...]} | absent (no service hours)}
  Returns: msgpack [] (nothing a gateway needs to see)
  Errors:  "E_BAD_ID group", "E_GROUP_UNKNOWN <id>", "E_BAD_ARG <field>",
           "E_STALE <group>" (its service hours changed meanwhile: read them again)
]]
OPS.set_service_windows = function(now, a)
  local g = L.id(a.group, "group")
  if not L.group(g) then L.fail("E_GROUP_UNKNOWN", g) end
  local meta = call("HGET", K.group(g), "meta") or ""
  if redis.sha1hex(meta) ~= a.meta_sha1 then L.fail("E_STALE", g) end
  local w = a.windows
  if w == nil then
    call("HDEL", K.group(g), "win")
  else
    if type(w) ~= "table" then L.fail("E_BAD_ARG", "windows") end
    L.int(w.hz, 0, 1e15, "windows.hz")
    local iv = L.list(w.iv, 20000, "windows.iv")
    if #iv % 2 == 1 then L.fail("E_BAD_ARG", "windows.iv") end
    local last = -1
    for _, x in ipairs(iv) do
      L.int(x, 0, 1e15, "windows.iv")
      if x <= last then L.fail("E_BAD_ARG", "windows.iv not increasing") end
      last = x
    end
    call("HSET", K.group(g), "win", cmsgpack.pack({hz = w.hz, iv = iv}))
  end
  L.forget_group(g)
  if call("ZCARD", K.ticket_queue(g)) > 0 then L.ticket_wake(g, now) end
  return {}
end
