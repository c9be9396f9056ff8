--[[
  Delete a ticket type. Its tickets, open or closed, are not touched; no new ticket of
  the type can be created.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {type}
  Returns: msgpack [{event="ticket_type_deleted", type}]
  Errors:  "E_BAD_ID type", "E_TICKET_TYPE_UNKNOWN <id>"
]]
OPS.delete_ticket_type = function(now, a)
  local id = L.id(a.type, "type")
  if call("HDEL", K.ticket_types(), id) == 0 then L.fail("E_TICKET_TYPE_UNKNOWN", id) end
  return {{event = "ticket_type_deleted", type = id}}
end
