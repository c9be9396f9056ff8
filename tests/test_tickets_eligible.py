"""The ticket-eligible agents of a group ({t}:g:<group>:tka, lua/lib/30_ticket_hook.lua):
the index that finds a ticket's handler in O(log members). It must hold exactly the
members docs/tickets.md calls eligible (on shift, fewer open tickets than their limit),
ordered as the balanced pick is (fewest open tickets, longest since the last one, id),
after every kind of change; a group whose set was never built (data older than it) gets
it built at its first use, or by recount_agents; and during a shift-start release the
members who took their share are passed over however many rank first.
"""

from __future__ import annotations

from collections import Counter

from helpers import MIN, SEC, T0
from ticket_helpers import agent, create, daily, handlers, local, set_hours, tick, world

from dispatchd import keys
from dispatchd.messages import (
    CloseTicket,
    CreateTicket,
    DeleteAgent,
    DeleteGroup,
    RecountAgents,
    TicketQueued,
)


async def stored(client, tenant: str, g: str) -> list[tuple[str, int]]:
    """The group's set as stored, in order: (member, score)."""
    rows = await client.zrange(keys.key("ticket_agents", tenant, g), 0, -1, withscores=True)
    return [(m.decode(), int(s)) for m, s in rows]


async def defined(client, tenant: str, g: str) -> list[tuple[str, int]]:
    """What the definition gives, from the agents themselves, in the balanced order."""
    out = []
    for raw in await client.hkeys(keys.key("members", tenant, g)):
        a = raw.decode()
        st, tlim, tka = await client.hmget(keys.key("agent", tenant, a), "st", "tlim", "tka")
        load = await client.zcard(keys.key("agent_tickets", tenant, a))
        if st is not None and st != b"offline" and load < int(tlim or 20):
            out.append((f"{int(tka or 0):015d}{a}", load))
    return sorted(out, key=lambda x: (x[1], x[0]))


async def exact(client, tenant: str, *groups: str) -> None:
    for g in groups:
        assert await stored(client, tenant, g) == await defined(client, tenant, g), g


def ids(rows: list[tuple[str, int]]) -> list[str]:
    return [m[15:] for m, _ in rows]


async def test_kept_exact_by_status_limit_groups_tickets_and_deletion(engine, tenant,
                                                                      redis_client):
    await world(engine, tenant, {"a1": ["g", "h"], "a2": ["g"], "a3": ["g"]},
                offline=["a3"], limit=2)
    await exact(redis_client, tenant, "g", "h")
    assert ids(await stored(redis_client, tenant, "g")) == ["a1", "a2"]
    await create(engine, tenant, T0 + SEC, "k1", "g")  # to a1: its load and last change
    await create(engine, tenant, T0 + 2 * SEC, "k2", "h")  # to a1 again: at its limit
    assert ids(await stored(redis_client, tenant, "g")) == ["a2"]
    assert await stored(redis_client, tenant, "h") == []
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "a3", "away")  # on shift: in
    await engine.set_agent_status(tenant, T0 + 3 * SEC, "a2", "offline")  # out
    await exact(redis_client, tenant, "g", "h")
    assert ids(await stored(redis_client, tenant, "g")) == ["a3"]
    await engine.apply(tenant, T0 + 4 * SEC, CloseTicket(ticket="k1", resolution="ok",
                                                         agent="a1"))
    await exact(redis_client, tenant, "g", "h")
    assert ids(await stored(redis_client, tenant, "g")) == ["a3", "a1"]  # a1: one open
    await agent(engine, tenant, "a1", ["h"], limit=1, now=T0 + 5 * SEC)  # leaves g, at limit
    await exact(redis_client, tenant, "g", "h")
    assert ids(await stored(redis_client, tenant, "g")) == ["a3"]
    assert await stored(redis_client, tenant, "h") == []
    await engine.apply(tenant, T0 + 6 * SEC, DeleteAgent(agent="a3"))
    assert await stored(redis_client, tenant, "g") == []
    await agent(engine, tenant, "a2", ["g"], now=T0 + 7 * SEC)
    assert ids(await stored(redis_client, tenant, "g")) == ["a2"]
    await engine.apply(tenant, T0 + 8 * SEC, DeleteGroup(group="g"))
    assert not await redis_client.exists(keys.key("ticket_agents", tenant, "g"))
    assert not await redis_client.hexists(keys.key("ticket_agents_built", tenant), "g")


async def test_older_group_gets_its_set_built_at_first_use(engine, tenant, redis_client):
    """Data written before the sets existed: none, or a partial one made by changes since;
    the first assignment builds it from the members and picks as the docs say."""
    await world(engine, tenant, {"a1": ["g"], "a2": ["g"], "a3": ["g"]}, offline=["a3"])
    await create(engine, tenant, T0 + SEC, "k1", "g")  # to a1
    built = keys.key("ticket_agents_built", tenant)
    await redis_client.delete(keys.key("ticket_agents", tenant, "g"))
    await redis_client.hdel(built, "g")
    await redis_client.zadd(keys.key("ticket_agents", tenant, "g"), {"000000000000000a3": 0})
    events = await create(engine, tenant, T0 + 2 * SEC, "k2", "g")
    assert handlers(events) == {"k2": "a2"}
    assert await redis_client.hexists(built, "g")
    await exact(redis_client, tenant, "g")


async def test_recount_agents_builds_every_group_set(engine, tenant, redis_client):
    await world(engine, tenant, {"a1": ["g", "h"], "a2": ["h"], "a3": ["g"]}, offline=["a3"])
    await create(engine, tenant, T0 + SEC, "k1", "g")
    built = keys.key("ticket_agents_built", tenant)
    await redis_client.delete(built, keys.key("ticket_agents", tenant, "g"),
                              keys.key("ticket_agents", tenant, "h"))
    await engine.apply(tenant, T0 + 2 * SEC, RecountAgents())
    assert sorted(await redis_client.hkeys(built)) == [b"g", b"h"]
    await exact(redis_client, tenant, "g", "h")
    assert ids(await stored(redis_client, tenant, "h")) == ["a2", "a1"]


async def test_minute_poll_rebuilds_a_set_that_finds_nobody(engine, tenant, redis_client):
    """A limit repaired behind the engine's back is not in the set; the group's next look
    (here its minute poll) finds nobody eligible, builds the set anew and sees it."""
    await world(engine, tenant, {"a1": ["g"]}, limit=0)
    await create(engine, tenant, T0, "k1", "g")  # queued: a1's limit is 0
    await redis_client.hset(keys.key("agent", tenant, "a1"), "tlim", 5)
    assert await stored(redis_client, tenant, "g") == []
    assert handlers(await tick(engine, tenant, T0 + MIN)) == {"k1": "a1"}
    await exact(redis_client, tenant, "g")


EVENING = local("America/New_York", 2026, 4, 14, 20, 0)
OPENS = local("America/New_York", 2026, 4, 15, 9, 0)


async def test_release_passes_over_every_member_who_took_its_share(engine, tenant,
                                                                   redis_client):
    """21 members, 21 tickets released: a share of 1 each. The twenty with no tickets take
    one each and then rank first (1 open ticket), all capped; the 21st ticket goes to zz
    with its 3 older tickets, read past the twenty."""
    members = [f"a{n:02}" for n in range(20)]
    await world(engine, tenant, {**{a: ["g"] for a in members}, "zz": ["g", "side"]},
                now=EVENING, spread_ms=15 * MIN)
    await set_hours(engine, tenant, "g", daily("09:00", "17:00"), EVENING)
    for n in range(3):
        await create(engine, tenant, EVENING + n, f"s{n}", "side")  # to zz
    tickets = [f"t{n:02}" for n in range(21)]
    for n, tid in enumerate(tickets):
        await engine.apply(tenant, EVENING + SEC + n,
                           CreateTicket(ticket=tid, type="task", group="g", by="sys"))
    events = await tick(engine, tenant, OPENS)
    assert handlers(events) == {**dict(zip(tickets, members, strict=False)), "t20": "zz"}
    await exact(redis_client, tenant, "g", "side")
    # the cap holds for everyone now: a new ticket waits for the end of the release
    out = await create(engine, tenant, OPENS + MIN, "late", "g")
    assert out[1] == TicketQueued(ticket="late", group="g", reason="created", position=1)
    after = await tick(engine, tenant, OPENS + 15 * MIN)
    assert Counter(handlers(after).values()) == {"a00": 1}
