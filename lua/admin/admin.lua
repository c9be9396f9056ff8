--[[
  One audited configuration change or supervisor action of the admin API (admin/), all
  in this one atomic call; only the admin_change script includes this file.
  - expect: "present" / "absent": the resource's first snapshot key (or field) must
    exist / must not exist, else E_NOT_FOUND / E_EXISTS;
  - version: when given, the resource's current version must equal it, else
    "E_VERSION <current>" (versions count the resource's audited changes; sessions
    and tickets have none: their version stays 0);
  - state: when given, the session `id` must be in that state, else
    "E_SESSION_STATE <state>";
  - team: a team that must exist (an agent's), else "E_TEAM_UNKNOWN <id>";
    team_unused: a team no agent may be in (deleting it), else "E_TEAM_IN_USE <agents>";
  - cmd: a routing command applied through its transition; when it is refused,
    nothing at all is written;
  - writes: admin-only fields, {"hset", key, key_arg, field, value} (a map value is
    stored msgpack-packed) or {"hdel", key, key_arg, field} (key: a name of
    dispatchd/keys.py, key_arg its argument or "");
  - the resource's snapshot before and after (snap: {key, key_arg, field} each: one
    field, or the whole hash when field is ""), who, the action and the command go to
    {t}:audit;
  - the command's events go to {t}:out, as a gateway command's would (docs/protocol.md).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] change       msgpack map {actor, role, action, resource, id, expect?, version?,
                       state?, team?, team_unused?, cmd?, writes=[], snap=[], out_maxlen,
                       audit_maxlen}
  Returns: msgpack {events = [...], out = [JSON of each event as appended to {t}:out],
                   version = n, audit = "<audit stream id>"}
  Errors:  "E_NOT_FOUND <resource> <id>", "E_EXISTS <resource> <id>",
           "E_VERSION <current>", "E_SESSION_STATE <state>", "E_TEAM_UNKNOWN <id>",
           "E_TEAM_IN_USE <agents>", "E_BAD_ARG <field>", and those of cmd's transition
]]
local function key_of(name, arg)
  local fn = K[name]
  if not fn or type(arg) ~= "string" then L.fail("E_BAD_ARG", "key " .. tostring(name)) end
  return fn(arg) -- a key without arguments ignores it
end

-- Stored values that are msgpack blobs: unpacked in snapshots, so the audit log holds
-- text and numbers only. BLOBS by field name; BLOB_HASHES: hashes whose every value is one.
local BLOBS = {tiers = true, timers = true, meta = true, rules = true, f = true}
local BLOB_HASHES = {teams = true, ticket_types = true}
-- Derived fields left out of snapshots: a group's service windows (from its meta).
local DERIVED = {win = true}

local function value(v, blob)
  if v and blob then return cmsgpack.unpack(v) end
  return v
end

-- The resource as stored: per snap spec, a field's value or a hash's field map (false
-- when absent).
local function snapshot(snap)
  local out = {}
  for i, spec in ipairs(snap) do
    local key = key_of(spec[1], spec[2])
    if spec[3] ~= "" then
      out[i] = value(call("HGET", key, spec[3]), BLOBS[spec[3]] or BLOB_HASHES[spec[1]])
    else
      local flat, map = call("HGETALL", key), {}
      for j = 1, #flat, 2 do
        if not DERIVED[flat[j]] then
          map[flat[j]] = value(flat[j + 1], BLOBS[flat[j]] or BLOB_HASHES[spec[1]])
        end
      end
      out[i] = #flat > 0 and map or false
    end
  end
  return out
end

local function check_expect(c)
  if not c.expect then return end
  local first = c.snap[1]
  local exists
  if first[3] ~= "" then
    exists = call("HEXISTS", key_of(first[1], first[2]), first[3]) == 1
  else
    exists = call("EXISTS", key_of(first[1], first[2])) == 1
  end
  if c.expect == "present" and not exists then L.fail("E_NOT_FOUND", c.resource .. " " .. c.id) end
  if c.expect == "absent" and exists then L.fail("E_EXISTS", c.resource .. " " .. c.id) end
end

-- A team can go only when no agent is in it (one pass over the tenant's agents).
local function team_unused(team)
  local members = {}
  for _, a in ipairs(call("SMEMBERS", K.agents())) do
    if call("HGET", K.agent(a), "team") == team then members[#members + 1] = a end
  end
  if #members > 0 then
    table.sort(members)
    L.fail("E_TEAM_IN_USE", "agents " .. table.concat(members, ",", 1, math.min(#members, 20)))
  end
end

-- Append the events to {t}:out; returns their JSON as appended (what the API answers).
local function publish(events, now, maxlen)
  local sessions, out = {}, {}
  for i, e in ipairs(events) do
    local copy = {}
    for k, v in pairs(e) do copy[k] = v end
    e.decision = nil -- kept in the session's history only
    out[i] = (L.outbound(copy, now, nil, sessions)) -- (): its JSON only, not the session info
    call("XADD", K.outbound(), "MAXLEN", "~", maxlen, "*", "json", out[i])
  end
  return out
end

function L.admin(now_arg, packed)
  local ok, res = pcall(function()
    local now = L.check_now(now_arg)
    local c = cmsgpack.unpack(packed)
    for _, w in ipairs(c.writes) do key_of(w[2], w[3]) end
    check_expect(c)
    if c.team and call("HEXISTS", K.teams(), c.team) == 0 then L.fail("E_TEAM_UNKNOWN", c.team) end
    if c.team_unused then team_unused(c.team_unused) end
    if c.state then -- an action on a session in one state only (assign: queued)
      local s = L.session(c.id)
      if not s then L.fail("E_SESSION_STATE", "unknown") end
      if s.st ~= c.state then L.fail("E_SESSION_STATE", L.state_name(s)) end
    end
    local vfield = c.resource .. ":" .. c.id
    local version = tonumber(call("HGET", K.versions(), vfield)) or 0
    if c.version and c.version ~= version then L.fail("E_VERSION", version) end
    local before = snapshot(c.snap)
    local events = {}
    if c.cmd then
      local fn = OPS[c.cmd.op]
      if not fn then L.fail("E_BAD_ARG", "op " .. tostring(c.cmd.op)) end
      events = L.op(fn, now, c.cmd)
    end
    for _, w in ipairs(c.writes) do
      local key = key_of(w[2], w[3])
      if w[1] == "hdel" then
        call("HDEL", key, w[4])
      elseif type(w[5]) == "table" then
        call("HSET", key, w[4], cmsgpack.pack(w[5]))
      else
        call("HSET", key, w[4], w[5])
      end
    end
    if c.resource ~= "session" and c.resource ~= "ticket" then -- no versions for work items
      version = call("HINCRBY", K.versions(), vfield, 1)
    end
    local audit = call("XADD", K.audit(), "MAXLEN", "~", c.audit_maxlen, "*",
      "ts", sfmt("%d", now), "actor", c.actor, "role", c.role, "action", c.action,
      "resource", c.resource, "id", c.id, "version", version,
      "cmd", cmsgpack.pack(c.cmd or {}), "before", cmsgpack.pack(before),
      "after", cmsgpack.pack(snapshot(c.snap)), "events", #events)
    local out = publish(events, now, c.out_maxlen)
    return {events = events, out = out, version = version, audit = audit}
  end)
  if not ok then return redis.error_reply(L.error_text(res)) end
  return cmsgpack.pack(res)
end
