"""Metric values against known traffic: the counters and histograms of dispatchd.metrics
after gateway commands through the real streams (in-process consumer, fake clock), and
the sampler's gauges on the state that traffic leaves.

Every test uses a fresh tenant, so the process-wide registry's series of one test are
its own.
"""

from __future__ import annotations

import pytest
from gateway_helpers import SEC, Gateway, open_gateway, types

from dispatchd import keys, metrics, observe
from dispatchd.messages import Alert, Assigned, Preclosed, Reactivated, Released, Transferred
from dispatchd.sampler import Sampler


@pytest.fixture
async def gw(engine, redis_client, tenant):
    async with open_gateway(engine, redis_client, tenant) as g:
        yield g


def value(name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels`` (0 when it does not exist)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def arrive(gw: Gateway, *sessions: str, group: str = "g") -> None:
    for sid in sessions:
        await gw.client.arrive(sid, group, id=f"arrive-{sid}")


async def test_service_level_counts_ten_customers_three_late(gw):
    t = gw.tenant
    await gw.group("g", reply_sla_ms=10 * SEC)  # service level: 20 s (the default)
    await gw.agent("a", ["g"], capacity=7)
    await arrive(gw, *(f"s{i}" for i in range(10)))
    events = await gw.pump()
    assert types(events).count("assigned") == 7 and types(events).count("queued") == 3

    gw.clock.advance(4 * SEC)
    await gw.client.agent_message("s3", "a", id="reply-s3")
    await gw.pump()

    gw.clock.advance(21 * SEC)  # T0 + 25 s: the three queued waited past 20 s
    for sid in ("s0", "s1", "s2"):
        await gw.client.close_session(sid, id=f"close-{sid}")
    events = await gw.pump()
    assert [e["wait_ms"] for e in events if e["type"] == "assigned"] == [25 * SEC] * 3

    assert value("dispatchd_answered_total", tenant=t, group="g",
                 outcome="within_threshold") == 7
    assert value("dispatchd_answered_total", tenant=t, group="g", outcome="over_threshold") == 3
    assert value("dispatchd_queue_wait_seconds_count", tenant=t, group="g") == 10
    assert value("dispatchd_queue_wait_seconds_sum", tenant=t, group="g") == 75.0
    assert value("dispatchd_queue_wait_seconds_bucket", tenant=t, group="g", le="20.0") == 7
    assert value("dispatchd_assignments_total", tenant=t, group="g", tier="0", via="group") == 10
    assert value("dispatchd_first_response_seconds_count", tenant=t, group="g") == 1
    assert value("dispatchd_first_response_seconds_sum", tenant=t, group="g") == 4.0
    # s4..s6 owed a reply for 10 s (s3 replied; s0..s2 were closed in the batch before
    # its timers fired)
    assert value("dispatchd_alerts_total", tenant=t, group="g", kind="reply_sla") == 3
    assert value("dispatchd_sessions_closed_total", tenant=t, outcome="closed") == 3
    assert value("dispatchd_commands_total", tenant=t, kind="arrive", outcome="applied") == 10
    assert value("dispatchd_commands_total", tenant=t, kind="close_session",
                 outcome="applied") == 3
    assert value("dispatchd_events_total", tenant=t, kind="assigned") == 10
    # set_agent_status, 10 arrivals, a reply, 3 closes
    assert value("dispatchd_command_latency_seconds_count", tenant=t) == 15
    assert value("dispatchd_tenant_held", tenant=t) == 1


async def test_abandonment_within_and_over_the_threshold(gw):
    t = gw.tenant
    await gw.group("g", service_level_ms=10 * SEC)
    await gw.agent("a", ["g"], capacity=1)
    await arrive(gw, "s0", "s1", "s2", "s3")
    await gw.pump()
    gw.clock.advance(5 * SEC)
    await gw.client.customer_leave("s1", id="leave-s1")  # waited 5 s: within 10 s
    await gw.pump()
    gw.clock.advance(10 * SEC)
    await gw.client.customer_leave("s2", id="leave-s2")  # waited 15 s
    await gw.client.customer_leave("s0", id="leave-s0")  # was answered: not abandoned
    events = await gw.pump()
    assert [e["wait_ms"] for e in events if e["type"] == "assigned"] == [15 * SEC]  # s3

    assert value("dispatchd_abandoned_total", tenant=t, group="g",
                 outcome="within_threshold") == 1
    assert value("dispatchd_abandoned_total", tenant=t, group="g", outcome="over_threshold") == 1
    assert value("dispatchd_answered_total", tenant=t, group="g",
                 outcome="within_threshold") == 1
    assert value("dispatchd_answered_total", tenant=t, group="g", outcome="over_threshold") == 1
    assert value("dispatchd_sessions_closed_total", tenant=t, outcome="abandoned") == 2
    assert value("dispatchd_sessions_closed_total", tenant=t, outcome="customer_left") == 1


async def test_a_session_answered_twice_counts_once(gw):
    t = gw.tenant
    await gw.group("g")
    await gw.group("h")
    await gw.agent("a", ["g"])
    await gw.agent("b", ["h"])
    await arrive(gw, "s1")
    await gw.pump()
    gw.clock.advance(30 * SEC)
    await gw.client.transfer("s1", to_group="h", id="move")
    events = await gw.pump()
    assert types(events) == ["transferred", "assigned"]
    assert value("dispatchd_answered_total", tenant=t, group="g",
                 outcome="within_threshold") == 1
    assert value("dispatchd_answered_total", tenant=t, group="h", outcome="over_threshold") == 0
    assert value("dispatchd_assignments_total", tenant=t, group="h", tier="0", via="group") == 1
    assert value("dispatchd_transfers_total", tenant=t, group="g", kind="request") == 1
    assert value("dispatchd_queue_wait_seconds_count", tenant=t, group="h") == 0


async def test_overflow_preclose_reactivation_and_dead_letters(gw):
    t = gw.tenant
    await gw.group("bot")
    await gw.group("g", tiers=[{"after_ms": 3 * SEC, "groups": ["bot"]}],
                   silence_preclose_ms=5 * SEC)
    await gw.agent("a", ["g"])
    await gw.agent("robot", ["bot"])
    await arrive(gw, "s1", "s2")
    await gw.pump()
    gw.clock.advance(3 * SEC)
    events = await gw.pump()  # s2 overflows to bot
    assert [e["tier"] for e in events if e["type"] == "assigned"] == [1]
    await gw.client.agent_message("s1", "a", id="reply")
    await gw.pump()
    gw.clock.advance(5 * SEC)
    await gw.pump()  # s1 pre-closed
    await gw.client.customer_message("s1", id="back")
    await gw.pump()
    await gw.client.customer_message("s1", id="back")  # a retry: duplicate
    await gw.send_raw({b"json": b"{not json"})
    await gw.client.agent_message("nobody", "a", id="bad")
    await gw.pump()

    assert value("dispatchd_assignments_total", tenant=t, group="g", tier="1",
                 via="overflow") == 1
    assert value("dispatchd_preclosed_total", tenant=t) == 1
    assert value("dispatchd_reactivated_total", tenant=t, outcome="within_capacity") == 1
    assert value("dispatchd_commands_total", tenant=t, kind="customer_message",
                 outcome="duplicate") == 1
    assert value("dispatchd_commands_total", tenant=t, kind="invalid", outcome="refused") == 1
    assert value("dispatchd_commands_total", tenant=t, kind="agent_message",
                 outcome="refused") == 1
    assert value("dispatchd_dead_letters_total", tenant=t, code="E_MALFORMED") == 1
    assert value("dispatchd_dead_letters_total", tenant=t, code="E_SESSION_UNKNOWN") == 1


async def test_sampler_gauges(gw, redis_client):
    t = gw.tenant
    await gw.group("g", service_level_ms=15 * SEC, service_level_target=0.9,
                   queue_warning_ms=30 * SEC)
    await gw.group("idle")
    await gw.agent("a", ["g"], capacity=2)
    await gw.agent("b", ["g", "idle"], capacity=3, online=False)
    await gw.client.arrive("s0", "g", id="c0")
    await gw.client.arrive("s1", "g", id="c1")
    await gw.client.arrive("s2", "g", id="c2")
    await gw.client.arrive("vip", "g", priority=5, id="c3")  # U = 60 s: 300 s ahead
    await gw.pump()
    gw.clock.advance(40 * SEC)
    await gw.send_raw({b"json": b"[]"})  # a dead letter
    await gw.pump()
    await gw.send_raw({b"json": b'{"type":"agent_ready","id":"later","agent":"a"}'})  # unread

    sampler = Sampler(redis_client, [t], interval_s=1.0, clock=gw.clock)
    snap = await sampler.sample()

    def gauge(name: str, *labels: str) -> float:
        found = [v for lv, v in snap[name] if lv == (t, *labels)]
        assert len(found) == 1, (name, labels, snap[name])
        return found[0]

    assert gauge("queued_sessions", "g") == 2 and gauge("queued_sessions", "idle") == 0
    assert gauge("queue_oldest_wait_seconds", "g") == 40.0
    assert gauge("queue_oldest_virtual_wait_seconds", "g") == 340.0  # vip is next
    assert gauge("queue_oldest_wait_seconds", "idle") == 0.0
    assert gauge("agents", "online") == 1 and gauge("agents", "offline") == 1
    assert gauge("group_agents", "g", "online") == 1
    assert gauge("group_agents", "idle", "offline") == 1
    assert gauge("agent_load_sessions") == 2 and gauge("agent_capacity_sessions") == 2
    assert gauge("group_occupancy_ratio", "g") == 1.0
    assert gauge("group_occupancy_ratio", "idle") == 0.0
    assert gauge("group_service_level_threshold_seconds", "g") == 15.0
    assert gauge("group_service_level_target_ratio", "g") == 0.9
    assert gauge("group_service_level_threshold_seconds", "idle") == 20.0
    assert gauge("group_queue_warning_seconds", "g") == 30.0
    assert gauge("dead_letter_stream_length") == 1
    assert gauge("stream_lag_entries") == 1 and gauge("stream_pending_entries") == 0
    assert 0 <= gauge("stream_oldest_entry_age_seconds") < 60

    assert await sampler.sample_once()
    scraped = metrics.REGISTRY.get_sample_value("dispatchd_queued_sessions",
                                                {"tenant": t, "group": "g"})
    assert scraped == 2
    # the sampler created the alerting counters of each group at 0
    assert metrics.REGISTRY.get_sample_value(
        "dispatchd_abandoned_total",
        {"tenant": t, "group": "idle", "outcome": "over_threshold"}) == 0


async def test_sampler_on_a_tenant_not_consumed_yet(redis_client, tenant):
    """No consumer group yet (XINFO GROUPS fails): the lag is the stream's length."""
    await redis_client.xadd(keys.key("inbound", tenant), {"json": b"{}"})
    snap = await Sampler(redis_client, [tenant], interval_s=1.0).sample()
    assert ((tenant,), 1.0) in snap["stream_lag_entries"]
    assert ((tenant,), 0.0) in snap["stream_pending_entries"]
    # no groups (other tests' tenants in dispatchd:tenants may have some)
    assert not [labels for labels, _ in snap.get("queued_sessions", []) if labels[0] == tenant]
    await redis_client.delete(keys.key("inbound", tenant))


def test_observe_events_from_the_engine(tenant):
    observe.observe_events(tenant, [
        Assigned(session="s", agent="a", group="g", tier=2, via="forced", wait_ms=0),
        Transferred(session="s", from_group="g", to_group="h", reason="handover"),
        Alert(kind="reply_sla", session="s", group="g", waited_ms=1),
        Preclosed(session="s", agent="a"),
        Reactivated(session="s", agent="a", over_capacity=True),
        Released(session="s", agent="a", reason="some free text"),
    ])
    t = tenant
    assert value("dispatchd_assignments_total", tenant=t, group="g", tier="2", via="forced") == 1
    assert value("dispatchd_transfers_total", tenant=t, group="g", kind="handover") == 1
    assert value("dispatchd_alerts_total", tenant=t, group="g", kind="reply_sla") == 1
    assert value("dispatchd_preclosed_total", tenant=t) == 1
    assert value("dispatchd_reactivated_total", tenant=t, outcome="over_capacity") == 1
    assert value("dispatchd_sessions_closed_total", tenant=t, outcome="other") == 1
    assert value("dispatchd_events_total", tenant=t, kind="closed") == 1
    assert value("dispatchd_events_total", tenant=t, kind="assigned") == 1
