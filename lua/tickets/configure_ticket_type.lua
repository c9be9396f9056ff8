--[[
  Create or replace a ticket type: the template its tickets are checked against.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {type, name="", fields=[{name, type, required=false,
                       values=[...] (enum), max_length=2000 (string)}], first_response_ms=0,
                       resolution_ms=0 (SLA targets from creation, 0 = none)}
           field types: string, integer, number, boolean, date ("YYYY-MM-DD"), enum
  Returns: msgpack [{event="ticket_type_configured", type}]
  Errors:  "E_BAD_ID type", "E_BAD_ARG <field>"
  Tickets already created keep the fields they were created with.
]]
local FIELD_TYPES = {string = true, integer = true, number = true, boolean = true,
                     date = true, enum = true}

OPS.configure_ticket_type = function(now, a)
  local id = L.id(a.type, "type")
  local name = L.str(a.name or "", 200, "name")
  local frt = L.int(a.first_response_ms or 0, 0, 1e12, "first_response_ms")
  local res = L.int(a.resolution_ms or 0, 0, 1e12, "resolution_ms")
  local fields, seen = {}, {}
  for i, f in ipairs(L.list(a.fields, 100, "fields")) do
    if type(f) ~= "table" then L.fail("E_BAD_ARG", "fields") end
    local fname = L.id(f.name, "fields.name")
    if seen[fname] then L.fail("E_BAD_ARG", "fields: " .. fname .. " twice") end
    seen[fname] = true
    if not FIELD_TYPES[f.type] then L.fail("E_BAD_ARG", "fields." .. fname .. ".type") end
    local required = f.required or false
    if type(required) ~= "boolean" then L.fail("E_BAD_ARG", "fields." .. fname .. ".required") end
    local field = {name = fname, type = f.type, required = required}
    if f.type == "enum" then
      local values = L.list(f.values, 200, "fields." .. fname .. ".values")
      if #values == 0 then L.fail("E_BAD_ARG", "fields." .. fname .. ".values") end
      for _, v in ipairs(values) do L.str(v, 200, "fields." .. fname .. ".values") end
      field.values = values
    elseif f.type == "string" then
      field.max_length = L.int(f.max_length or 2000, 1, 100000, "fields." .. fname .. ".max_length")
    end
    fields[i] = field
  end
  call("HSET", K.ticket_types(), id,
    cmsgpack.pack({name = name, fields = fields, frt = frt, res = res}))
  return {{event = "ticket_type_configured", type = id}}
end
