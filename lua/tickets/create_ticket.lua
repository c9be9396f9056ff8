--[[
  Create a ticket of a type, addressed to a group (never a person). Its fields are
  checked against the type's template; it then enters the group: held outside the
  group's service hours, else assigned at once to an eligible member, else queued.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock; the ticket's creation time (SLA start)
  ARGV[2] command      msgpack map {ticket, type, group, by (who creates it: an agent,
                       a system, an admin token), fields={name: value}, title="",
                       priority=0, order_id?, order_owner? (the order's owner, an agent
                       id: preferred as handler of the order's tickets)}
  Returns: msgpack [{event="ticket_created", ...}, then ticket_assigned | ticket_queued |
           ticket_held; before that one, the events of the tickets already waiting in
           the group when its look at them was due and not yet ticked (they go first)]
  Errors:  "E_BAD_ID <field>", "E_BAD_ARG <field>", "E_TICKET_EXISTS <id>",
           "E_TICKET_TYPE_UNKNOWN <id>", "E_GROUP_UNKNOWN <id>",
           "E_TICKET_FIELD <what is wrong, naming the field>"
]]
local MONTH_DAYS = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

-- A calendar date "YYYY-MM-DD" (the shape alone would let 2026-13-45 through).
local function is_date(v)
  if type(v) ~= "string" then return false end
  local y, m, d = v:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  if not y then return false end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 1 or m > 12 or d < 1 then return false end
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  return d <= MONTH_DAYS[m] + ((m == 2 and leap) and 1 or 0)
end

local function check_field(f, v)
  local t, n = f.type, f.name
  if t == "string" then
    if type(v) ~= "string" then L.fail("E_TICKET_FIELD", n .. ": expected a string") end
    if #v > f.max_length then
      L.fail("E_TICKET_FIELD", n .. ": longer than " .. f.max_length .. " bytes")
    end
    if f.required and v == "" then L.fail("E_TICKET_FIELD", "missing required field " .. n) end
  elseif t == "integer" then
    if type(v) ~= "number" or v ~= math.floor(v) or v ~= v or math.abs(v) >= 1e14 then
      L.fail("E_TICKET_FIELD", n .. ": expected an integer")
    end
  elseif t == "number" then
    if type(v) ~= "number" or v ~= v or math.abs(v) == math.huge then
      L.fail("E_TICKET_FIELD", n .. ": expected a number")
    end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then L.fail("E_TICKET_FIELD", n .. ": expected true or false") end
  elseif t == "date" then
    if not is_date(v) then L.fail("E_TICKET_FIELD", n .. ": expected a date YYYY-MM-DD") end
  elseif t == "enum" then
    local ok = false
    for _, x in ipairs(f.values) do if x == v then ok = true end end
    if not ok then
      L.fail("E_TICKET_FIELD", n .. ": expected one of " .. table.concat(f.values, ", "))
    end
  end
end

local function check_fields(tmpl, fields)
  if fields == nil then fields = {} end
  if type(fields) ~= "table" then L.fail("E_BAD_ARG", "fields") end
  local known = {}
  for _, f in ipairs(tmpl.fields) do
    known[f.name] = true
    local v = fields[f.name]
    if v == nil then
      if f.required then L.fail("E_TICKET_FIELD", "missing required field " .. f.name) end
    else
      check_field(f, v)
    end
  end
  local unknown = {}
  for k in pairs(fields) do
    if type(k) ~= "string" or not known[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown > 0 then
    table.sort(unknown)
    L.fail("E_TICKET_FIELD", "not in the template: " .. table.concat(unknown, ", "))
  end
  return fields
end

OPS.create_ticket = function(now, a)
  local id = L.id(a.ticket, "ticket")
  local ty = L.id(a.type, "type")
  local g = L.id(a.group, "group")
  local by = L.str(a.by, 256, "by")
  if by == "" then L.fail("E_BAD_ARG", "by") end
  local title = L.str(a.title or "", 500, "title")
  local prio = L.int(a.priority or 0, -1000, 1000, "priority")
  local order = L.opt_id(a.order_id, "order_id")
  local owner = L.opt_id(a.order_owner, "order_owner")
  if owner and not order then L.fail("E_BAD_ARG", "order_owner needs order_id") end
  local raw = call("HGET", K.ticket_types(), ty)
  if not raw then L.fail("E_TICKET_TYPE_UNKNOWN", ty) end
  local tmpl = cmsgpack.unpack(raw)
  if not L.group(g) then L.fail("E_GROUP_UNKNOWN", g) end
  local fields = check_fields(tmpl, a.fields)
  if call("EXISTS", K.ticket(id)) == 1 then L.fail("E_TICKET_EXISTS", id) end

  local t = {id = id, p = prio, at = now, o = order or "", hops = 0}
  local frd = tmpl.frt > 0 and now + tmpl.frt or 0
  local rsd = tmpl.res > 0 and now + tmpl.res or 0
  call("HSET", K.ticket(id), "ty", ty, "o", t.o, "p", prio, "at", sfmt("%d", now), "by", by,
    "ti", title, "f", cmsgpack.pack(fields), "fr", "", "frd", sfmt("%d", frd),
    "rsd", sfmt("%d", rsd), "hops", 0, "brf", "", "brr", "")
  call("ZADD", K.tickets(), sfmt("%d", now), id)
  if frd > 0 then L.ticket_timer("fr", id, frd) end
  if rsd > 0 then L.ticket_timer("rs", id, rsd) end
  if order then
    call("ZADD", K.order_tickets(order), sfmt("%d", now), id)
    if owner then call("HSET", K.order(order), "owner", owner) end
  end
  local ev = {{event = "ticket_created", ticket = id, type = ty, group = g, by = by,
               priority = prio, order_id = order, title = title ~= "" and title or nil}}
  L.ticket_enter(t, g, now, "created", ev)
  return ev
end
