--[[
  Entry points: the gateway batch (L.gateway), one command (L.run) or a batch (L.batch).
  Every path records each session's events in the session's history, and each ticket's
  events in the ticket's.
]]

local function unpack_command(packed)
  local ok, c = pcall(cmsgpack.unpack, packed)
  if not ok or type(c) ~= "table" then L.fail("E_BAD_ARG", "command is not a msgpack map") end
  return c
end

-- ---------------------------------------------------------------- the gateway batch
--[[
  L.gateway applies a batch of gateway commands read from the tenant's inbound stream
  (docs/protocol.md), all in this one atomic call:
  - lease: the call holds the tenant only if {t}:lease is free or carries `lease` (then
    renewed for lease_ms); otherwise nothing is applied or acknowledged ({held=false});
  - idempotency: a command id seen within dedupe_ms is acknowledged and skipped, with a
    `duplicate` event (its id and entry) instead of its events;
  - each command's events are appended to {t}:out as JSON, the command id recorded, its
    stream entry acknowledged and deleted from {t}:in (not deleted when none of the
    batch's entries was pending in the group: see flush);
  - a refused command (op "reject" from the daemon, or a script error) gets an `error`
    event and a bounded copy of its entry in {t}:dead (see refuse);
  - with `tick`, or when the commands scheduled something due now (a woken ticket
    queue, a timer), due overflow steps, preference fallbacks, lifecycle timers and
    ticket timers fire last; a tick with no command is skipped while {t}:in holds entries
    (they were sent before it and go first);
  - a call with neither commands nor a tick only checks and renews the lease (a few µs).
  ARGV[2] msgpack {lease, lease_ms, group, dedupe_ms, out_maxlen, dead_maxlen,
                   tick (limit or nil), due (true: fire even if {t}:in holds entries), cmds = [{op, _id, _e, ...fields} |
                   {op="reject", _e, _id?, error="<code> <message>"}]}
]]
local OUT_NAMES = {released = "closed", abandoned = "closed"}
-- The timed transitions a tick runs, each with the due zset it reads (nil: always run;
-- the ticket tick also purges closed tickets, one call when there are none).
local TICK_OPS = {"escalate_overflow", "expire_preferences", "fire_timers", "ticket_tick"}
local TICK_DUE = {escalate_overflow = "due_overflow", expire_preferences = "due_preference",
                  fire_timers = "due_timers"}

-- Whether anything in the due zset K[name]() is due at `now` (one O(1) look at its head).
local function anything_due(name, now)
  local head = call("ZRANGE", K[name](), 0, 0, "WITHSCORES")
  return head[2] ~= nil and tonumber(head[2]) <= now
end

-- Keep a session's history: its events in their outbound form, oldest first. The list
-- is capped (the newest HISTORY_MAX are kept) and expires with the closed session. (Not
-- in the session's hash: a value over 64 bytes turns a hash from a listpack into a
-- table, which would more than double the hash's memory.)
local HISTORY_MAX = 500

local function record(sid, json, closing)
  local key = K.history(sid)
  if call("RPUSH", key, json) > HISTORY_MAX then call("LTRIM", key, -HISTORY_MAX, -1) end
  if closing then call("PEXPIRE", key, L.retention()) end
end

-- A ticket's history is kept whole (it is the audit trail of its hops) until the ticket
-- is purged; a status query is not part of it.
local function record_ticket(e, json)
  if e.type ~= "ticket_status" then call("RPUSH", K.ticket_history(e.ticket), json) end
end

-- Turn event `e` (in place) into its outbound form (docs/protocol.md), record it in its
-- session's history, and return its JSON. On the stream `type` is the event's name, so
-- the ticket type some ticket events carry in `type` goes out as `ticket_type`. An
-- `assigned` event's decision record (lua/lib/15_decisions.lua) goes into the history
-- entry only: taken off the event, it is never part of the returned JSON.
local function outbound(e, now, cmd_id, sessions)
  local decision = e.decision
  e.decision = nil
  e.ticket_type = e.type
  e.type, e.event = OUT_NAMES[e.event] or e.event, nil
  e.ts, e.cmd = now, cmd_id
  local sid = e.session
  if sid then
    local info = sessions[sid]
    if not info then
      info = call("HMGET", K.session(sid), "gw", "ph", "rs", "g")
      sessions[sid] = info
    end
    if info[1] and info[1] ~= "" then e.gateway = info[1] end
    if e.type == "closed" then
      e.state, e.reason = info[2] or "closed", e.reason or info[3] or nil
    end
  end
  -- every key the protocol table lists without "?" is present: eta_ms is null for a
  -- customer parked with an agent (no group rate applies) or a group with no rate
  if e.type == "queued" or e.type == "position" then
    e.eta_ms = not e.parked_with and L.eta(e.group, e.position, e.wait_ms or 0, now)
      or cjson.null
  end
  local ok, json = pcall(cjson.encode, e)
  if not ok then -- a bug, but the batch must go on: say so instead of the event
    json = cjson.encode({type = "error", code = "E_INTERNAL", ts = now, cmd = cmd_id,
                         message = "event not encodable: " .. tostring(json)})
  end
  if sid then
    local kept = json
    if decision then
      local ok2, d = pcall(cjson.encode, decision)
      -- (not encodable would be a bug: the entry is kept without it)
      if ok2 then kept = ssub(json, 1, -2) .. ',"decision":' .. d .. "}" end
    end
    record(sid, kept, e.type == "closed")
  end
  if e.ticket then record_ticket(e, json) end
  return json, sid and sessions[sid] or nil
end

-- Commands applied outside the gateway (L.run, L.batch) leave the same history; their
-- events go back to the caller unchanged, so each is recorded from a copy.
local function record_all(events, now)
  local sessions = {}
  for _, e in ipairs(events) do
    if e.session or e.ticket then
      local c = {}
      for k, v in pairs(e) do c[k] = v end
      e.decision = nil -- kept in the history only
      outbound(c, now, nil, sessions)
    end
  end
end

-- ------------------------------------------------------------------- statistics
--[[
  What the daemon's metrics need from a gateway batch (dispatchd/observe.py turns it into
  the metrics of docs/metrics.md), gathered as events are emitted and returned as `stats`:
    n    counts by key: "cmd <outcome> <op>" (applied, duplicate, refused), "asg <group>
         <tier> <via>", "al <kind> <group>", "tr <reason> <from group>", "pc",
         "rea <within_capacity|over_capacity>", "err <code>", "cl <reason>" (reason last:
         a close reason may be free text)
    ans  first assignments, flat triples: group, wait_ms, within (1 when the wait was at
         most the group's service-level threshold, else 0)
    ab   sessions that left the queue never answered, flat triples: group, wait_ms, within
    fr   first agent replies, flat pairs: group, first_response_ms
    tkr  closed tickets, flat pairs: group, resolution_ms
    tkfr first responses on tickets, flat pairs: group, first_response_ms
  Ticket counts in n: "tkc <group> <type>" created, "tka <group> <via> <reason>"
  assigned, "tkf <from group> <to group>" forwarded, "tkl <group>" forwarding loops,
  "tko <group> <kind>" overdue.
  Extra Redis work, once per session each: HSETNX of the session's first-answer mark
  "ans" per assignment, HEXISTS per abandonment (a first response's group comes with
  the fields outbound reads anyway).
]]
local function bump(st, key) st.n[key] = (st.n[key] or 0) + 1 end

local function within(group, wait)
  local gc = L.group(group)
  return wait <= (gc and gc.slms or 20000) and 1 or 0
end

local function push3(list, a, b, c)
  local i = #list
  list[i + 1], list[i + 2], list[i + 3] = a, b, c
end

-- Keyed by the event's internal name (before `outbound` renames it); `e` is outbound.
local STAT = {
  assigned = function(st, e)
    bump(st, "asg " .. e.group .. " " .. e.tier .. " " .. e.via)
    if call("HSETNX", K.session(e.session), "ans", "1") == 1 then
      push3(st.ans, e.group, e.wait_ms, within(e.group, e.wait_ms))
    end
  end,
  abandoned = function(st, e)
    bump(st, "cl " .. tostring(e.reason))
    if call("HEXISTS", K.session(e.session), "ans") == 0 then
      push3(st.ab, e.group, e.wait_ms, within(e.group, e.wait_ms))
    end
  end,
  released = function(st, e) bump(st, "cl " .. tostring(e.reason)) end,
  state_changed = function(st, e, info) -- info: the session's gw, ph, rs, g (outbound)
    if e.first_response_ms then
      local n = #st.fr
      st.fr[n + 1] = info and info[4] or ""
      st.fr[n + 2] = e.first_response_ms
    end
  end,
  alert = function(st, e) bump(st, "al " .. e.kind .. " " .. e.group) end,
  transferred = function(st, e)
    bump(st, "tr " .. (e.reason or "request") .. " " .. e.from_group)
  end,
  preclosed = function(st) bump(st, "pc") end,
  reactivated = function(st, e)
    bump(st, e.over_capacity and "rea over_capacity" or "rea within_capacity")
  end,
  error = function(st, e) bump(st, "err " .. e.code) end,
  ticket_created = function(st, e) bump(st, "tkc " .. e.group .. " " .. e.ticket_type) end,
  ticket_assigned = function(st, e)
    bump(st, "tka " .. e.group .. " " .. e.via .. " " .. e.reason)
  end,
  ticket_forwarded = function(st, e) bump(st, "tkf " .. e.from_group .. " " .. e.to_group) end,
  ticket_loop = function(st, e) bump(st, "tkl " .. e.group) end,
  ticket_overdue = function(st, e) bump(st, "tko " .. e.group .. " " .. e.kind) end,
  ticket_closed = function(st, e)
    local n = #st.tkr
    st.tkr[n + 1], st.tkr[n + 2] = e.group, e.resolution_ms
  end,
  ticket_responded = function(st, e)
    if e.first_response_ms then
      local n = #st.tkfr
      st.tkfr[n + 1], st.tkfr[n + 2] = e.group, e.first_response_ms
    end
  end,
}

-- The stats without their empty parts (an empty Lua table packs as an array).
local function packed_stats(st)
  if not next(st.n) then st.n = nil end
  for _, k in ipairs({"ans", "ab", "fr", "tkr", "tkfr"}) do
    if #st[k] == 0 then st[k] = nil end
  end
  return next(st) and st or nil
end

local function emit(g, e, now, cmd_id, sessions)
  local kind = e.event
  local json, info = outbound(e, now, cmd_id, sessions)
  call("XADD", K.outbound(), "MAXLEN", "~", g.out_maxlen, "*", "json", json)
  g.events = g.events + 1
  g.types[e.type] = (g.types[e.type] or 0) + 1
  local stat = STAT[kind]
  if stat then stat(g.st, e, info) end
end

-- What a dead letter keeps of the entry it copies (docs/protocol.md, "Dead letters"), so
-- a gateway that sends huge entries cannot fill the server's memory through {t}:dead:
-- a payload field's first DEAD_PAYLOAD bytes with its size and SHA-1 (redis.sha1hex),
-- at most DEAD_OTHERS other fields with their names and values cut, and the error text
-- cut (it can quote the command).
local DEAD_PAYLOAD, DEAD_OTHERS, DEAD_NAME, DEAD_VALUE, DEAD_ERROR = 16384, 32, 64, 256, 1024

-- `s` cut to at most `n` bytes, not inside a UTF-8 sequence (it goes out in JSON too).
local function cut_text(s, n)
  if #s <= n then return s end
  while n > 0 do
    local b = s:byte(n + 1)
    if b < 0x80 or b >= 0xC0 then break end
    n = n - 1
  end
  return s:sub(1, n)
end

local function refuse(g, c, text, now)
  text = cut_text(text, DEAD_ERROR)
  local code, message = text:match("^(E_[A-Z_]+)%s*(.*)$")
  code, message = code or "E_INTERNAL", code and message or text
  local e = {event = "error", code = code, message = message, entry = c._e}
  emit(g, e, now, c._id, {})
  local dead = {"XADD", K.dead(), "MAXLEN", "~", g.dead_maxlen, "*",
                "entry", c._e or "", "error", text, "ts", sfmt("%d", now)}
  local orig = c._e and call("XRANGE", K.inbound(), c._e, c._e)[1]
  if orig then
    -- the payload field (its first DEAD_PAYLOAD bytes, its size and hash); any other
    -- field as "field:<name>", so an entry cannot forge entry/error/ts and a misnamed
    -- payload is still visible
    local f, kept, others, n = orig[2], {}, 0, #dead
    for i = 1, #f - 1, 2 do
      local name, value = f[i], f[i + 1]
      if (name == "json" or name == "msgpack") and not kept[name] then
        kept[name] = true
        dead[n + 1], dead[n + 2] = name, value:sub(1, DEAD_PAYLOAD)
        dead[n + 3], dead[n + 4] = name .. "_bytes", sfmt("%d", #value)
        dead[n + 5], dead[n + 6] = name .. "_sha1", redis.sha1hex(value)
        n = n + 6
      elseif others < DEAD_OTHERS then
        others = others + 1
        dead[n + 1] = "field:" .. name:sub(1, DEAD_NAME)
        dead[n + 2] = value:sub(1, DEAD_VALUE)
        n = n + 2
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
    local acked = 0
    for i = 1, #g.entries, 1000 do
      acked = acked + call("XACK", K.inbound(), g.group,
                           unpack(g.entries, i, math.min(i + 999, #g.entries)))
    end
    -- None acknowledged: the entries were read before the group vanished (a FLUSHALL,
    -- see dispatchd/consumer.py), and their ids may name entries gateways sent since,
    -- into the new stream, not applied yet: those must not be deleted.
    if acked > 0 then call_chunked({"XDEL", K.inbound()}, g.entries, 1000) end
  end
end

local function apply_one(g, c, now)
  local applied, outcome = false, "refused"
  if c._id and (g.seen[c._id] or call("ZSCORE", K.applied(), c._id)) then
    -- a retry of an applied command: nothing is applied again; the gateway learns it was
    -- seen from a `duplicate` event (no stats entry: the outcome counts it)
    g.duplicates, outcome = g.duplicates + 1, "duplicate"
    emit(g, {event = "duplicate", entry = c._e}, now, c._id, {})
  elseif c.op == "reject" then
    refuse(g, c, tostring(c.error), now)
  elseif not OPS[c.op] then
    refuse(g, c, "E_UNKNOWN_OP " .. tostring(c.op), now)
  else
    local ok, res = pcall(L.op, OPS[c.op], now, c)
    if ok then
      local sessions = {}
      for _, e in ipairs(res) do emit(g, e, now, c._id, sessions) end
      g.applied, applied, outcome = g.applied + 1, true, "applied"
    else
      refuse(g, c, L.error_text(res), now)
    end
  end
  bump(g.st, "cmd " .. outcome .. " " .. tostring(c.op))
  done(g, c, now, applied)
end

function L.gateway(now_arg, packed)
  local now = L.check_now(now_arg)
  local g = cmsgpack.unpack(packed)
  local holder = call("GET", K.lease())
  if holder and holder ~= g.lease then return cmsgpack.pack({held = false, holder = holder}) end
  call("SET", K.lease(), g.lease, "PX", g.lease_ms)
  local cmds = g.cmds or {}
  -- a tick asked for with no command skips while {t}:in holds entries: they were sent
  -- before it (the daemon reads them in the same round trip) and go first
  -- (at most once in a row: `due` says the last one was skipped, so a stream that keeps
  -- an entry nobody reads cannot hold the timers back)
  if g.tick and #cmds == 0 and not g.due and call("XLEN", K.inbound()) > 0 then
    return cmsgpack.pack({held = true, skipped = true})
  end
  if #cmds == 0 and not g.tick then return cmsgpack.pack({held = true}) end -- a renewal
  g.applied, g.duplicates, g.failed, g.events, g.types = 0, 0, 0, 0, {}
  g.seen, g.ids, g.entries = {}, {}, {}
  g.st = {n = {}, ans = {}, ab = {}, fr = {}, tkr = {}, tkfr = {}}
  call("ZREMRANGEBYSCORE", K.applied(), "-inf", sfmt("(%d", now - g.dedupe_ms))
  for _, c in ipairs(cmds) do apply_one(g, c, now) end
  flush(g)
  -- the tick the daemon asked for, or one the commands made due now (L.scheduled)
  if g.tick or L.due_now then
    local limit = g.tick or 1000
    for _, op in ipairs(TICK_OPS) do
      if not TICK_DUE[op] or anything_due(TICK_DUE[op], now) then
        local sessions = {}
        for _, e in ipairs(L.op(OPS[op], now, {limit = limit})) do
          emit(g, e, now, nil, sessions)
        end
      end
    end
  end
  -- when the batch was done, on the server's clock (that of the stream ids): the daemon
  -- measures command latency with it, whatever else shares the round trip
  local t = call("TIME")
  return cmsgpack.pack({
    done = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
    held = true, applied = g.applied, duplicates = g.duplicates, failed = g.failed,
    events = g.events, types = next(g.types) and g.types or nil, stats = packed_stats(g.st),
  })
end

-- ------------------------------------------------------------------ engine entry points

-- One command through its own script.
function L.run(op, now_arg, packed)
  local ok, res = pcall(function()
    local now = L.check_now(now_arg)
    local c = unpack_command(packed)
    local events = L.op(OPS[op], now, c)
    record_all(events, now)
    return events
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
      local ok3, res = pcall(L.op, fn, now, c)
      if ok3 then
        record_all(res, now)
        out[i] = {events = res}
      else
        out[i] = {error = L.error_text(res)}
      end
    end
  end
  return cmsgpack.pack(out)
end

-- For the admin entry point (lua/admin/admin.lua): events in their outbound form.
L.outbound = outbound
