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
