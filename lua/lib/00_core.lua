--[[
  Shared routing helpers, included before every transition (see dispatchd/scripts.py).
  The rules they implement are docs/routing.md; read that first.

  Provided before this file: OPS (transitions register here), P (tenant key prefix, set
  by L.enter from KEYS[1]) and K (key builders generated from dispatchd/keys.py).
  Assembled into one Function library by dispatchd/scripts.py.

  Discipline every transition follows: validate everything, then write. An error raised
  with L.fail before the first write leaves no trace, which is what makes a refused
  command "never half-applied", alone or inside a batch.

  Queue member: 15-digit arrival ms .. 10-digit arrival sequence .. flag .. session id,
  flag "b" when the customer blocks some agents, "-" otherwise. Equal scores order by
  member, so ties go to the earlier arrival, then the lower sequence; the flag lets the
  agent side skip the blocked-set lookup for the common customer who blocks nobody.
]]
local L = {}
-- A function library may not touch any global while it loads (not even `string`): the
-- shortcuts below are bound by L.enter at every call, and the top level of every file
-- only defines functions and constant tables.
local call, sfmt, ssub, sbyte
-- A function library keeps its upvalues between calls: these caches are fresh tables
-- made by L.enter at every entry point, never carried from one call to the next.
local GROUPS -- group config cache; lives for one call (a whole batch)
local AGENTS -- agent cache; one table per agent per command, so every path sees one truth
local COUNTS -- agent counter changes of the command (L.op): key -> field -> amount
local TENANT -- tenant settings read once per call (L.retention)

-- ------------------------------------------------------------------------ entry

-- Every entry point starts a call here: the tenant prefix from the root key (KEYS[1]),
-- fresh caches, no clock yet.
function L.enter(root)
  if type(root) ~= "string" or #root <= ROOT_SUFFIX then L.fail("E_BAD_ARG", "root key") end
  call, sfmt, ssub, sbyte = redis.call, string.format, string.sub, string.byte
  P = ssub(root, 1, -ROOT_SUFFIX - 1)
  GROUPS, AGENTS, COUNTS, TENANT, L.now = {}, {}, {}, {}, nil
  L.due_now = false
end

-- Something was scheduled for `due`: if that is now or earlier, the gateway call fires
-- the timed transitions after its commands (L.due_now), not a tick later.
function L.scheduled(due)
  if L.now and due <= L.now then L.due_now = true end
end

-- How long a closed session (its hash, sets and history) is kept; read once per call.
function L.retention()
  if not TENANT.retention then
    TENANT.retention = tonumber(call("HGET", K.tenant(), "retention_ms")) or 86400000
  end
  return TENANT.retention
end

local function flush_counts()
  for key, fields in pairs(COUNTS) do
    for f, n in pairs(fields) do
      if n ~= 0 then call("HINCRBY", key, f, n) end
    end
  end
  COUNTS = {}
end

-- Run one transition: a fresh agent cache, and its agent counter changes written once
-- at its end (an assignment and a release in one command cancel out: no write). A
-- transition that fails has written nothing (validate, then write), so its counter
-- changes are dropped with it.
function L.op(fn, now, c)
  AGENTS, COUNTS, L.now = {}, {}, now
  local res = fn(now, c)
  flush_counts()
  return res
end

-- ----------------------------------------------------------------------------- errors

function L.fail(code, detail)
  error({err = code .. " " .. tostring(detail)}, 0)
end

function L.error_text(e)
  if type(e) == "table" and e.err then return e.err end
  return tostring(e)
end

-- ------------------------------------------------------------------------- validation

function L.id(v, what)
  if type(v) ~= "string" or #v < 1 or #v > 64 or v:find("[^%w_.@%-]") then
    L.fail("E_BAD_ID", what)
  end
  return v
end

function L.opt_id(v, what)
  if v == nil then return nil end
  return L.id(v, what)
end

function L.num(v, lo, hi, what)
  if type(v) ~= "number" or v ~= v or v < lo or v > hi then L.fail("E_BAD_ARG", what) end
  return v
end

function L.int(v, lo, hi, what)
  L.num(v, lo, hi, what)
  if v ~= math.floor(v) then L.fail("E_BAD_ARG", what) end
  return v
end

function L.str(v, maxlen, what)
  if type(v) ~= "string" or #v > maxlen then L.fail("E_BAD_ARG", what) end
  return v
end

function L.list(v, maxlen, what)
  if v == nil then return {} end
  if type(v) ~= "table" or #v > maxlen then L.fail("E_BAD_ARG", what) end
  for k in pairs(v) do
    if type(k) ~= "number" then L.fail("E_BAD_ARG", what) end
  end
  return v
end

function L.check_now(v)
  local now = tonumber(v)
  if not now or now ~= math.floor(now) or now < 0 or now >= 1e15 then
    L.fail("E_BAD_ARG", "now_ms")
  end
  return now
end

-- -------------------------------------------------------------------------- entities

function L.group(g)
  local c = GROUPS[g]
  if c == nil then
    local r = call("HMGET", K.group(g), "k", "m", "u", "sticky", "pref", "tiers", "timers")
    if not r[1] then
      c = false
    else
      c = cmsgpack.unpack(r[7] or "\128") -- lifecycle timers (see configure_group.lua)
      c.k, c.m, c.u = tonumber(r[1]), tonumber(r[2]), tonumber(r[3])
      c.sticky, c.pref, c.tiers = tonumber(r[4]), tonumber(r[5]), cmsgpack.unpack(r[6])
    end
    GROUPS[g] = c
  end
  return c
end

function L.forget_group(g) GROUPS[g] = nil end

function L.agent(a)
  local ag = AGENTS[a]
  if ag == nil then
    local r = call("HMGET", K.agent(a), "st", "cap", "load", "pre", "last")
    if not r[1] then
      ag = false
    else
      ag = {
        id = a, st = r[1], cap = tonumber(r[2]), load = tonumber(r[3]),
        pre = tonumber(r[4]), last = tonumber(r[5]),
      }
      ag.counted = {st = ag.st, cap = ag.cap, load = ag.load, pre = ag.pre}
    end
    AGENTS[a] = ag
  end
  return ag
end

-- The agent's skills as a flat HGETALL list {group, ability, ...}, read once per command.
function L.skills(ag)
  if not ag.sk then ag.sk = call("HGETALL", K.skills(ag.id)) end
  return ag.sk
end

-- ------------------------------------------------------------------ agent counters
--[[
  What the metrics sampler reads instead of every agent (so a sample is O(groups)):
  {t}:ast (the tenant) and {t}:g:<group>:ast (the group's members), hashes of
    on / aw / off   agents by status
    ld / cp         load and capacity summed over the online agents
    pc              pre-closed sessions (the tenant's hash only)
  An agent table remembers what it was counted as (`counted`, nil for an agent not
  counted yet); L.save_agent adds the difference, so every change of status, capacity,
  load or pre-closed count through it keeps the counters exact. A change of the agent's
  groups first takes its part out (L.uncount_agent), then saves it anew. The changes are
  summed per command and written when it ends (L.op), one HINCRBY per field that moved.
]]
local STATUS_FIELD = {online = "on", away = "aw", offline = "off"}

-- The agent's part: {field -> amount} (nil: nothing).
local function part(c)
  if not c then return {} end
  local p = {[STATUS_FIELD[c.st] or "off"] = 1, pc = c.pre}
  if c.st == "online" then p.ld, p.cp = c.load, c.cap end
  return p
end

local function add_parts(ag, before, after)
  local delta, any = {}, false
  for f, n in pairs(after) do delta[f] = n end
  for f, n in pairs(before) do delta[f] = (delta[f] or 0) - n end
  for f, n in pairs(delta) do
    if n ~= 0 then any = true else delta[f] = nil end
  end
  if not any then return end
  local function add(key)
    local h = COUNTS[key]
    if not h then h = {}; COUNTS[key] = h end
    for f, n in pairs(delta) do h[f] = (h[f] or 0) + n end
  end
  add(K.agent_totals())
  delta.pc = nil
  if not next(delta) then return end
  local sk = L.skills(ag)
  for i = 1, #sk, 2 do add(K.group_agents(sk[i])) end
end

-- Take the agent's part out of the counters (before its groups change or it goes).
function L.uncount_agent(ag)
  add_parts(ag, part(ag.counted), {})
  ag.counted = nil
end

function L.save_agent(ag)
  if ag.last then
    call("HSET", K.agent(ag.id), "st", ag.st, "cap", ag.cap, "load", ag.load, "pre", ag.pre,
      "last", sfmt("%d", ag.last))
  else
    call("HSET", K.agent(ag.id), "st", ag.st, "cap", ag.cap, "load", ag.load, "pre", ag.pre)
  end
  local now_counted = {st = ag.st, cap = ag.cap, load = ag.load, pre = ag.pre}
  add_parts(ag, part(ag.counted), part(now_counted))
  ag.counted = now_counted
end

-- The session hash fields a transition reads (docs/routing.md; ans and rs are read
-- where they are needed, never here).
local SESSION_FIELDS = {"st", "g", "p", "at", "sq", "tr", "q", "bl", "c", "gw", "va", "ag",
                        "pf", "ph", "pa", "pk", "fr", "x", "asg"}

function L.session(sid)
  local r = call("HMGET", K.session(sid), unpack(SESSION_FIELDS))
  if not r[1] then return nil end -- every session has a state
  local s = {id = sid}
  for i = 1, #SESSION_FIELDS do
    if r[i] then s[SESSION_FIELDS[i]] = r[i] end
  end
  s.p, s.at, s.sq = tonumber(s.p), tonumber(s.at), tonumber(s.sq)
  s.tr, s.va, s.pa = tonumber(s.tr) or 0, tonumber(s.va), tonumber(s.pa)
  -- its queue member is not stored (it would double what the queue holds): derived
  s.m = L.member(s.at, s.sq, s.bl == "1", sid)
  return s
end

-- Set of agents the session's customer blocks (a Lua set), read once.
function L.blocked(s)
  if not s.blk then
    s.blk = {}
    if s.bl == "1" then
      for _, a in ipairs(call("SMEMBERS", K.blocked(s.id))) do s.blk[a] = true end
    end
  end
  return s.blk
end

function L.member(at, seq, has_blocks, sid)
  return sfmt("%015d%010d", at, seq) .. (has_blocks and "b" or "-") .. sid
end

local function member_session(m) return ssub(m, 27) end

