--[[
  Fire the session lifecycle timers due at now_ms (up to `limit`), in due order:
    qw  queued too long               -> alert{kind="queue_wait"}
    qt  queue timeout                  -> closed as system_closed, reason "queue_timeout"
    pu  position update (repeats)      -> position
    sla agent owes a reply too long    -> alert{kind="reply_sla"}
    ra  still no reply                 -> reassigned: transfer back to its group
    sr  customer silent                -> alert{kind="customer_silence"} (the reminder)
    sp  customer still silent          -> pre-closed
    sc  customer silent for good       -> closed as system_closed, reason "customer_silence"
    cc  close request never answered   -> closed as system_closed, reason "confirm_timeout"
  A timer whose session has moved on (closed, or another phase) is dropped silently.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {limit=100}
  Returns: msgpack list of the events caused, in order
  Errors:  "E_BAD_ARG limit"
]]
local function alert(kind, s, now)
  return {event = "alert", kind = kind, session = s.id, group = s.g,
          agent = (s.ag ~= nil and s.ag ~= "") and s.ag or nil, waited_ms = now - (s.pa or s.at)}
end

local FIRE = {
  qw = function(s, now, ev)
    if s.st == "queued" then ev[#ev + 1] = alert("queue_wait", s, now) end
  end,
  qt = function(s, now, ev)
    if s.st == "queued" then L.abandon(s, now, "queue_timeout", "system_closed", ev) end
  end,
  pu = function(s, now, ev)
    if s.st ~= "queued" then return end
    ev[#ev + 1] = L.position_event(s, now)
    local ms = L.group(s.g).posint
    if ms and ms > 0 then L.timer("pu", s.id, now + ms) end
  end,
  sla = function(s, now, ev)
    if s.ph == "waiting_agent" then ev[#ev + 1] = alert("reply_sla", s, now) end
  end,
  ra = function(s, now, ev)
    if s.ph == "waiting_agent" and s.st == "assigned" then
      L.transfer(s, s.g, nil, false, now, ev, "reply_timeout")
    end
  end,
  sr = function(s, now, ev)
    if s.ph == "waiting_customer" then ev[#ev + 1] = alert("customer_silence", s, now) end
  end,
  sp = function(s, now, ev)
    if s.ph == "waiting_customer" and s.st == "assigned" then L.preclose(s, now, ev) end
  end,
  sc = function(s, now, ev)
    if s.ph == "waiting_customer" then
      L.release(s, now, "customer_silence", "system_closed", ev)
    end
  end,
  cc = function(s, now, ev)
    if s.ph == "pending_confirm" then
      L.release(s, now, "confirm_timeout", "system_closed", ev)
    end
  end,
}

OPS.fire_timers = function(now, a)
  local limit = L.int(a.limit or 100, 1, 10000, "limit")
  local ev = {}
  for _, member in ipairs(L.due(K.due_timers(), now, limit)) do
    call("ZREM", K.due_timers(), member)
    local kind, sid = member:match("^(%a+):(.+)$")
    local s = sid and L.session(sid)
    if s and s.st ~= "closed" and FIRE[kind] then
      AGENTS = {}
      FIRE[kind](s, now, ev)
    end
  end
  return ev
end
