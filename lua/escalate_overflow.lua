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
  local due = call("ZRANGEBYSCORE", K.due_overflow(), "-inf", sfmt("%d", now), "LIMIT", 0, limit)
  for _, sid in ipairs(due) do
    local s = L.session(sid)
    if not s or s.st ~= "queued" or s.q ~= "g" then
      call("ZREM", K.due_overflow(), sid)
    else
      local tiers = L.group(s.g).tiers
      local wait, opened = now - s.at, s.tr
      while tiers[s.tr + 1] and tiers[s.tr + 1].after_ms <= wait do
        s.tr = s.tr + 1
        call("ZADD", K.overflow(s.g, s.tr), s.va, s.m)
        ev[#ev + 1] = {event = "tier_opened", session = sid, group = s.g, tier = s.tr}
      end
      call("HSET", K.session(sid), "tr", s.tr)
      local nxt = tiers[s.tr + 1]
      if nxt then
        call("ZADD", K.due_overflow(), sfmt("%d", s.at + nxt.after_ms), sid)
      else
        call("ZREM", K.due_overflow(), sid)
      end
      if s.tr > opened then
        local ag, tier = L.best_agent(s)
        if ag then L.assign(s, L.agent(ag), tier == 0 and "group" or "overflow", tier, now, ev) end
      end
    end
  end
  return ev
end
