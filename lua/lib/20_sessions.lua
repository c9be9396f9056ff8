--[[
  Session transitions shared by the routing ops and the gateway lifecycle ops, and the
  session lifecycle of SPEC §3 (docs/protocol.md):

    queued -> waiting_agent <-> waiting_customer -> pending_confirm -> closed
    and system_closed for closes made by timers.

  The routing state `st` (queued/assigned/preclosed/closed) says where the session sits in
  the router; the phase `ph` says whose turn it is in the conversation. Each phase change
  writes `ph` and `pa` (when the phase was entered) and (re)schedules the session's timers
  in {t}:due:timers, members "<kind>:<session>":
    qw queue wait warning   qt queue timeout          pu position update
    sla agent reply SLA     ra reassign (no reply)
    sr silence reminder     sp silence pre-close      sc silence close
    cc confirmation auto-close
]]
local TIMERS = {"qw", "qt", "pu", "sla", "ra", "sr", "sp", "sc", "cc"}

function L.timer(kind, sid, due)
  call("ZADD", K.due_timers(), sfmt("%d", due), kind .. ":" .. sid)
  L.scheduled(due)
end

-- Drop the given timer kinds of a session (all kinds when none are named).
function L.cancel_timers(sid, kinds)
  local members = {}
  for i, kind in ipairs(kinds or TIMERS) do members[i] = kind .. ":" .. sid end
  call("ZREM", K.due_timers(), unpack(members))
end

-- Schedule `kind` at `from + ms` when the group has that timer (ms > 0).
local function maybe_timer(kind, sid, from, ms, now)
  if ms and ms > 0 then L.timer(kind, sid, math.max(from + ms, now)) end
end

-- `written`: the caller wrote ph and pa with its own HSET of the session (one call);
-- field `f` = `v`, when given, is written with them.
function L.set_phase(s, ph, now, written, f, v)
  local previous = s.ph
  s.ph, s.pa = ph, now
  if written then return previous end
  if f then
    call("HSET", K.session(s.id), "ph", ph, "pa", sfmt("%d", now), f, v)
  else
    call("HSET", K.session(s.id), "ph", ph, "pa", sfmt("%d", now))
  end
  return previous
end

-- Phase hooks, called by the routing helpers whenever a session is queued or assigned
-- (`written` as for L.set_phase). A session made by this very command (s.fresh) has no
-- timer to cancel.
function L.on_queued(s, now, written)
  if s.ph == "queued" then return end
  L.set_phase(s, "queued", now, written)
  local gc = L.group(s.g)
  if not s.fresh then L.cancel_timers(s.id, {"sla", "ra", "sr", "sp", "sc", "cc"}) end
  s.fresh = nil -- it may have timers from here on
  -- measured from entering the queue: a session transferred or re-queued after being
  -- served starts a new queue wait (its virtual arrival still keeps its original wait)
  maybe_timer("qw", s.id, now, gc.qwarn, now)
  maybe_timer("qt", s.id, now, gc.qtimeout, now)
  maybe_timer("pu", s.id, now, gc.posint, now)
end

function L.on_waiting_agent(s, now, written)
  L.set_phase(s, "waiting_agent", now, written)
  local gc = L.group(s.g)
  if not s.fresh then L.cancel_timers(s.id, {"qw", "qt", "pu", "sr", "sp", "sc", "cc"}) end
  s.fresh = nil
  maybe_timer("sla", s.id, now, gc.sla, now)
  maybe_timer("ra", s.id, now, gc.reassign, now)
end

-- (`f`, `v`: one more session field written with the phase, see L.set_phase)
function L.on_waiting_customer(s, now, f, v)
  L.set_phase(s, "waiting_customer", now, false, f, v)
  local gc = L.group(s.g)
  L.cancel_timers(s.id, {"sla", "ra", "sr", "sp", "sc", "cc"})
  maybe_timer("sr", s.id, now, gc.sremind, now)
  maybe_timer("sp", s.id, now, gc.spreclose, now)
  maybe_timer("sc", s.id, now, gc.sclose, now)
end

-- ------------------------------------------------------------------- closing sessions

-- Close a session (state "closed" or "system_closed") and keep it for retention_ms.
-- Its history list gets the same expiry when its `closed` event is recorded
-- (lua/lib/90_entry.lua).
function L.close_session(s, now, reason, state)
  local ttl = L.retention()
  s.st = "closed"
  L.set_phase(s, state or "closed", now, true)
  call("HSET", K.session(s.id), "st", "closed", "q", "", "rs", reason, "cl", sfmt("%d", now),
    "ph", s.ph, "pa", sfmt("%d", now))
  call("HINCRBY", K.group_open(), s.g, -1)
  L.cancel_timers(s.id)
  call("PEXPIRE", K.session(s.id), ttl)
  -- the sets exist only when the session says so (no call for a key that is not there)
  if s.bl == "1" then call("PEXPIRE", K.blocked(s.id), ttl) end
  if s.x == "1" then call("PEXPIRE", K.experts(s.id), ttl) end
end

-- End an assigned or pre-closed session; its agent takes more work.
function L.release(s, now, reason, state, ev)
  local ag = L.agent(s.ag)
  if s.st == "assigned" then
    call("SREM", K.agent_sessions(s.ag), s.id)
    ag.load = ag.load - 1
  else
    call("SREM", K.agent_preclosed(s.ag), s.id)
    ag.pre = ag.pre - 1
  end
  L.save_agent(ag)
  L.close_session(s, now, reason, state)
  if s.c and s.c ~= "" then
    call("HSET", K.customer(s.c), "ag", s.ag, "at", sfmt("%d", now))
    call("PEXPIRE", K.customer(s.c), 2592000000)
  end
  ev[#ev + 1] = {event = "released", session = s.id, agent = s.ag, reason = reason}
  L.refill(ag, now, ev)
end

-- A queued (or parked) customer leaves or times out.
function L.abandon(s, now, reason, state, ev)
  L.unqueue(s)
  L.close_session(s, now, reason, state)
  ev[#ev + 1] = {event = "abandoned", session = s.id, group = s.g, wait_ms = now - s.at}
end

function L.preclose(s, now, ev)
  local ag = L.agent(s.ag)
  call("SMOVE", K.agent_sessions(s.ag), K.agent_preclosed(s.ag), s.id)
  ag.load, ag.pre = ag.load - 1, ag.pre + 1
  L.save_agent(ag)
  s.st = "preclosed"
  call("HSET", K.session(s.id), "st", "preclosed")
  ev[#ev + 1] = {event = "preclosed", session = s.id, agent = s.ag}
  L.refill(ag, now, ev)
end

-- Back to the same agent (true) unless it is offline: then re-queued (false).
function L.reactivate(s, now, ev)
  local ag = L.agent(s.ag)
  if ag.st ~= "offline" then
    call("SMOVE", K.agent_preclosed(s.ag), K.agent_sessions(s.ag), s.id)
    ag.load, ag.pre = ag.load + 1, ag.pre - 1
    L.save_agent(ag)
    s.st = "assigned"
    call("HSET", K.session(s.id), "st", "assigned")
    L.refresh(ag)
    L.on_waiting_agent(s, now)
    ev[#ev + 1] = {
      event = "reactivated", session = s.id, agent = ag.id, over_capacity = ag.load > ag.cap,
    }
    return true
  end
  call("SREM", K.agent_preclosed(s.ag), s.id)
  ag.pre = ag.pre - 1
  L.save_agent(ag)
  L.refresh(ag)
  L.route(s, now, "reactivation", ev)
  return false
end

-- Move a queued or assigned session to a group or an agent (see transfer_session.lua).
-- `target` is the agent table for an agent transfer. The old agent takes work last.
function L.transfer(s, to_group, target, force, now, ev, reason)
  local from_group, old = s.g, nil
  if s.st == "assigned" then
    old = L.agent(s.ag)
    call("SREM", K.agent_sessions(old.id), s.id)
    old.load = old.load - 1
    L.save_agent(old)
    L.refresh(old)
  else
    L.unqueue(s)
  end
  ev[#ev + 1] = {
    event = "transferred", session = s.id, from_group = from_group,
    to_group = to_group or from_group, from_agent = old and old.id or nil,
    to_agent = target and target.id or nil, reason = reason,
  }
  if to_group then
    s.g = to_group
    call("HSET", K.session(s.id), "g", to_group)
    call("HINCRBY", K.group_open(), from_group, -1)
    call("HINCRBY", K.group_open(), to_group, 1)
    L.route(s, now, "transfer", ev)
  elseif force then
    if L.records(s) then
      L.decide_preferred(s, target, now,
        {agent = target.id, kind = "forced", used = true, reason = "forced"})
    end
    L.assign(s, target, "forced", 0, now, ev)
  elseif target.st == "online" and target.load < target.cap then
    if L.records(s) then
      L.decide_preferred(s, target, now,
        {agent = target.id, kind = "transfer", used = true, reason = "free capacity"})
    end
    L.assign(s, target, "transfer", 0, now, ev)
  else
    local pref = L.group(s.g).pref
    if pref > 0 then
      L.park(s, target, "transfer", now + pref, "transfer", ev)
    else
      if L.records(s) then
        s.pnote = {agent = target.id, kind = "transfer", used = false,
                   reason = (target.st == "away" and "away" or "at capacity")
                     .. ", preference_ms is 0"}
      end
      L.route(s, now, "transfer", ev)
    end
  end
  if old then L.fill(old, now, ev) end
end

-- ------------------------------------------------------------- lifecycle op helpers

-- The session's state as docs/protocol.md names it, for E_SESSION_STATE messages: one
-- of the six states (its phase), or "preclosed" (a waiting_customer session pre-closed).
function L.state_name(s)
  if s.st == "preclosed" then return "preclosed" end
  return s.ph or s.st
end

-- The session named by a command, which must exist and not be closed.
function L.live_session(v)
  local sid = L.id(v, "session")
  local s = L.session(sid)
  if not s then L.fail("E_SESSION_UNKNOWN", sid) end
  if s.st == "closed" then L.fail("E_SESSION_STATE", L.state_name(s)) end
  return s
end

-- Refuse an agent that is neither the session's agent nor (if allowed) invited into it.
function L.check_session_agent(s, agent, invited_ok)
  if agent == s.ag then return end
  if invited_ok and call("SISMEMBER", K.experts(s.id), agent) == 1 then return end
  L.fail("E_NOT_SESSION_AGENT", agent)
end

function L.state_changed(s, from, ev)
  local e = {event = "state_changed", session = s.id, from = from, to = s.ph}
  ev[#ev + 1] = e
  return e
end

function L.position_event(s, now)
  local key = s.q == "a" and K.parked(s.pf) or K.queue(s.g)
  return {
    event = "position", session = s.id, group = s.g, position = call("ZRANK", key, s.m) + 1,
    wait_ms = now - s.at, parked_with = s.q == "a" and s.pf or nil,
  }
end
