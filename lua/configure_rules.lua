--[[
  Replace the tenant's routing rules: an ordered list, the first rule whose every
  condition holds decides an arrival that gives attributes instead of a group (SPEC 2.1).
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {rules=[{name, match={attribute: condition},
                              group, priority=0, preferred_agent?, blocked_agents=[]}]}
           condition: a string/number/boolean (equal), a list of them (one of), or
           {min?, max?} (a number within, inclusive)
  Returns: msgpack [{event="rules_configured", count}]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_GROUP_UNKNOWN <id>"
  Customers already queued keep their group and priority.
]]
local function scalar(v, what)
  local t = type(v)
  if t == "string" then return L.str(v, 256, what) end
  if t == "boolean" or (t == "number" and v == v) then return v end
  L.fail("E_BAD_ARG", what)
end

local function condition(c, what)
  if type(c) ~= "table" then return scalar(c, what) end
  if c[1] ~= nil then
    for _, x in ipairs(L.list(c, 100, what)) do scalar(x, what) end
    return c
  end
  local n = 0
  for k, v in pairs(c) do
    if (k ~= "min" and k ~= "max") or type(v) ~= "number" or v ~= v then L.fail("E_BAD_ARG", what) end
    n = n + 1
  end
  if n == 0 then L.fail("E_BAD_ARG", what) end
  return {min = c.min, max = c.max}
end

local function rule(r, i)
  local what = "rules[" .. i .. "]"
  if type(r) ~= "table" then L.fail("E_BAD_ARG", what) end
  local out = {
    name = L.str(r.name or ("rule" .. i), 64, what .. ".name"),
    group = L.id(r.group, what .. ".group"),
    priority = L.int(r.priority or 0, -1000, 1000, what .. ".priority"),
    preferred_agent = L.opt_id(r.preferred_agent, what .. ".preferred_agent"),
    blocked_agents = L.list(r.blocked_agents, 100, what .. ".blocked_agents"),
    match = {},
  }
  for _, a in ipairs(out.blocked_agents) do L.id(a, what .. ".blocked_agents") end
  if type(r.match or {}) ~= "table" then L.fail("E_BAD_ARG", what .. ".match") end
  local n = 0
  for k, c in pairs(r.match or {}) do
    L.id(k, what .. ".match")
    out.match[k] = condition(c, what .. ".match." .. k)
    n = n + 1
  end
  if n > 32 then L.fail("E_BAD_ARG", what .. ".match") end
  if not L.group(out.group) then L.fail("E_GROUP_UNKNOWN", out.group) end
  return out
end

OPS.configure_rules = function(now, a)
  local rules = {}
  for i, r in ipairs(L.list(a.rules, 1000, "rules")) do rules[i] = rule(r, i) end
  call("HSET", K.tenant(), "rules", cmsgpack.pack(rules))
  return {{event = "rules_configured", count = #rules}}
end
