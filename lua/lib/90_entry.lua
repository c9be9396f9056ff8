--[[
  Entry points: one command (L.run) or a batch (L.batch).
]]
-- ------------------------------------------------------------------------- entry points

local function unpack_command(packed)
  local ok, c = pcall(cmsgpack.unpack, packed)
  if not ok or type(c) ~= "table" then L.fail("E_BAD_ARG", "command is not a msgpack map") end
  return c
end

-- One command through its own script.
function L.run(op, now_arg, packed)
  local ok, res = pcall(function()
    local now = L.check_now(now_arg)
    local c = unpack_command(packed)
    AGENTS, L.now = {}, now
    return OPS[op](now, c)
  end)
  if not ok then return redis.error_reply(L.error_text(res)) end
  return cmsgpack.pack(res)
end

-- Many commands in order; a refused one changes nothing and does not stop the rest.
function L.batch(now_arg, packed)
  local ok, now = pcall(L.check_now, now_arg)
  if not ok then return redis.error_reply(L.error_text(now)) end
  local ok2, cmds = pcall(unpack_command, packed)
  if not ok2 then return redis.error_reply(L.error_text(cmds)) end
  local out = {}
  for i = 1, #cmds do
    local c = cmds[i]
    local fn = type(c) == "table" and OPS[c.op] or nil
    if type(c) ~= "table" then
      out[i] = {error = "E_BAD_ARG command is not a map"}
    elseif not fn then
      out[i] = {error = "E_UNKNOWN_OP " .. tostring(c.op)}
    else
      AGENTS, L.now = {}, now
      local ok3, res = pcall(fn, now, c)
      if ok3 then out[i] = {events = res} else out[i] = {error = L.error_text(res)} end
    end
  end
  return cmsgpack.pack(out)
end

-- ---------------------------------------------------------------- the gateway batch
--[[
  L.gateway applies a batch of gateway commands read from the tenant's inbound stream
  (docs/protocol.md), all in this one atomic call:
  - lease: the call holds the tenant only if {t}:lease is free or carries `lease` (then
    renewed for lease_ms); otherwise nothing is applied or acknowledged ({held=false});
  - idempotency: a command id seen within dedupe_ms is acknowledged and skipped;
  - each command's events are appended to {t}:out as JSON, the command id recorded, its
    stream entry acknowledged and deleted from {t}:in;
  - a refused command (op "reject" from the daemon, or a script error) gets an `error`
    event and a copy of its entry in {t}:dead;
  - with `tick`, due overflow steps, preference fallbacks and lifecycle timers fire last.
  ARGV[2] msgpack {lease, lease_ms, group, dedupe_ms, out_maxlen, dead_maxlen,
                   tick (limit or nil), cmds = [{op, _id, _e, ...fields} |
                   {op="reject", _e, _id?, error="<code> <message>"}]}
]]
local OUT_NAMES = {released = "closed", abandoned = "closed"}
local TICK_OPS = {"escalate_overflow", "expire_preferences", "fire_timers"}

local function emit(g, e, now, cmd_id, sessions)
  e.type, e.event = OUT_NAMES[e.event] or e.event, nil
  e.ts, e.cmd = now, cmd_id
  local sid = e.session
  if sid then
    local info = sessions[sid]
    if not info then
      info = call("HMGET", K.session(sid), "gw", "ph", "rs")
      sessions[sid] = info
    end
    if info[1] and info[1] ~= "" then e.gateway = info[1] end
    if e.type == "closed" then
      e.state, e.reason = info[2] or "closed", e.reason or info[3] or nil
    end
  end
  if (e.type == "queued" or e.type == "position") and not e.parked_with then
    e.eta_ms = L.eta(e.group, e.position, e.wait_ms or 0, now) or cjson.null
  end
  local ok, json = pcall(cjson.encode, e)
  if not ok then -- a bug, but the batch must go on: say so instead of the event
    json = cjson.encode({type = "error", code = "E_INTERNAL", ts = now, cmd = cmd_id,
                         message = "event not encodable: " .. tostring(json)})
  end
  call("XADD", K.outbound(), "MAXLEN", "~", g.out_maxlen, "*", "json", json)
  g.events = g.events + 1
  g.types[e.type] = (g.types[e.type] or 0) + 1
end

local function refuse(g, c, text, now)
  local code, message = text:match("^(E_[A-Z_]+)%s*(.*)$")
  code, message = code or "E_INTERNAL", code and message or text
  local e = {event = "error", code = code, message = message, entry = c._e}
  emit(g, e, now, c._id, {})
  local dead = {"XADD", K.dead(), "MAXLEN", "~", g.dead_maxlen, "*",
                "entry", c._e or "", "error", text, "ts", sfmt("%d", now)}
  local orig = c._e and call("XRANGE", K.inbound(), c._e, c._e)[1]
  if orig then
    -- the payload field as it was; any other field (at most 32) as "field:<name>", so an
    -- entry cannot forge entry/error/ts and a misnamed payload is still visible
    local f, kept, others = orig[2], {}, 0
    for i = 1, #f - 1, 2 do
      if (f[i] == "json" or f[i] == "msgpack") and not kept[f[i]] then
        kept[f[i]] = true
        dead[#dead + 1], dead[#dead + 2] = f[i], f[i + 1]
      elseif others < 32 then
        others = others + 1
        dead[#dead + 1], dead[#dead + 2] = "field:" .. f[i], f[i + 1]
      end
    end
  end
  call(unpack(dead))
  g.failed = g.failed + 1
end

-- Acknowledge the entry and, when the command was applied, remember its id (a refused
-- command changed nothing, so a retry with the same id is evaluated again). Ids and
-- entries are written once per batch (flush).
local function done(g, c, now, applied)
  if c._id and applied then
    g.seen[c._id] = true
    g.ids[#g.ids + 1] = sfmt("%d", now)
    g.ids[#g.ids + 1] = c._id
  end
  if c._e then g.entries[#g.entries + 1] = c._e end
end

-- Many-argument commands in chunks (Lua's unpack has a stack limit).
local function call_chunked(head, args, step)
  for i = 1, #args, step do
    local cmd = {unpack(head)}
    for j = i, math.min(i + step - 1, #args) do cmd[#cmd + 1] = args[j] end
    call(unpack(cmd))
  end
end

local function flush(g)
  if #g.ids > 0 then call_chunked({"ZADD", K.applied()}, g.ids, 1000) end
  if #g.entries > 0 then
    call_chunked({"XACK", K.inbound(), g.group}, g.entries, 1000)
    call_chunked({"XDEL", K.inbound()}, g.entries, 1000)
  end
end

local function apply_one(g, c, now)
  local applied = false
  if c._id and (g.seen[c._id] or call("ZSCORE", K.applied(), c._id)) then
    g.duplicates = g.duplicates + 1
  elseif c.op == "reject" then
    refuse(g, c, tostring(c.error), now)
  elseif not OPS[c.op] then
    refuse(g, c, "E_UNKNOWN_OP " .. tostring(c.op), now)
  else
    AGENTS, L.now = {}, now
    local ok, res = pcall(OPS[c.op], now, c)
    if ok then
      local sessions = {}
      for _, e in ipairs(res) do emit(g, e, now, c._id, sessions) end
      g.applied, applied = g.applied + 1, true
    else
      refuse(g, c, L.error_text(res), now)
    end
  end
  done(g, c, now, applied)
end

function L.gateway(now_arg, packed)
  local now = L.check_now(now_arg)
  local g = cmsgpack.unpack(packed)
  local holder = call("GET", K.lease())
  if holder and holder ~= g.lease then return cmsgpack.pack({held = false, holder = holder}) end
  call("SET", K.lease(), g.lease, "PX", g.lease_ms)
  g.applied, g.duplicates, g.failed, g.events, g.types = 0, 0, 0, 0, {}
  g.seen, g.ids, g.entries = {}, {}, {}
  call("ZREMRANGEBYSCORE", K.applied(), "-inf", sfmt("(%d", now - g.dedupe_ms))
  for _, c in ipairs(g.cmds or {}) do apply_one(g, c, now) end
  flush(g)
  if g.tick then
    for _, op in ipairs(TICK_OPS) do
      AGENTS, L.now = {}, now
      local sessions = {}
      for _, e in ipairs(OPS[op](now, {limit = g.tick})) do emit(g, e, now, nil, sessions) end
    end
  end
  return cmsgpack.pack({
    held = true, applied = g.applied, duplicates = g.duplicates, failed = g.failed,
    events = g.events, types = next(g.types) and g.types or nil,
  })
end
