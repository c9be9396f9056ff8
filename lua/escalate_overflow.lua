--[[
  The due overflow step: for up to `limit` customers whose next tier is due at now_ms,
  open that tier (and any later one also due), so the agents of its groups join the
  customer's pool, and give the customer to the best agent of the larger pool if any.
  KEYS[1] {t}:tenant   hash   the tenant root; every other key is derived from it
  ARGV[1] now_ms       int    caller's clock
  ARGV[2] command      msgpack map {limit=100}
  Reads:   {t}:due:ovf (session -> due ms), in due order then session id.
  Returns: msgpack [{event="tier_opened", session, group, tier}..., {event="assigned"}...]
  Errors:  "E_BAD_ARG limit"
]]
OPS.escalate_overflow = function(now, a)
  local limit = L.int(a.limit or 100, 1, 10000, "limit")
  local ev = {}
  for _, sid in ipairs(L.due(K.due_overflow(), now, limit)) do
    local s = L.session(sid)
    if not s or s.st ~= "queued" or s.q ~= "g" then
      call("ZREM", K.due_overflow(), sid)
    else
      local tiers = L.group(s.g).tiers
      local opened = s.tr
      s.tr = L.earned_tier(tiers, opened, now - s.at)
      for n = opened + 1, s.tr do
        call("ZADD", K.overflow(s.g, n), s.va, s.m)
        ev[#ev + 1] = {event = "tier_opened", session = sid, group = s.g, tier = n}
      end
      call("HSET", K.session(sid), "tr", s.tr)
      L.schedule_overflow(s, tiers)
      if s.tr > opened then L.to_best_agent(s, now, ev) end
    end
  end
  return ev
end
