--[[
  Preference fallback: for up to `limit` customers parked with a preferred agent whose
  wait is over at now_ms, drop the preference and route them in their group.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {limit=100}
  Reads:   {t}:due:pref (session -> due ms), in due order then session id.
  Returns: msgpack [{event="preference_expired", session, agent}, then queued/assigned]...
  Errors:  "E_BAD_ARG limit"
]]
OPS.expire_preferences = function(now, a)
  local limit = L.int(a.limit or 100, 1, 10000, "limit")
  local ev = {}
  for _, sid in ipairs(L.due(K.due_preference(), now, limit)) do
    local s = L.session(sid)
    if not s or s.st ~= "queued" or s.q ~= "a" then
      call("ZREM", K.due_preference(), sid)
    else
      local agent = s.pf
      L.unqueue(s)
      ev[#ev + 1] = {event = "preference_expired", session = sid, agent = agent}
      L.route(s, now, "fallback", ev)
    end
  end
  return ev
end
