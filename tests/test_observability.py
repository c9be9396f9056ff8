"""End to end: the real daemon scraped by a real Prometheus.

``dispatchd run`` serves the test server's tenants; Prometheus (the Debian package,
installed when missing) scrapes its ops listener every second and loads
deploy/prometheus/alerts.yml. Traffic through the gateway streams (sessions and tickets)
then puts every alert in its firing condition, and every query of the Grafana dashboard
and of the alert rules must parse and return data through Prometheus's HTTP API, using
only metric names that exist on ``/metrics``. The daemon is stopped last, so the
DispatchdDown query has data.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prom_helpers import ALERTS, DASHBOARD, prometheus_binaries

from dispatchd import keys
from dispatchd.client import GatewayClient
from dispatchd.embedded import free_port
from dispatchd.engine import Engine
from dispatchd.messages import ConfigureTicketType

BIN = Path(sys.executable).parent / "dispatchd"
DEADLINE_S = 40.0
#: A database of its own, so the daemon serves only this test's tenants.
TEST_DB = 9


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def db_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("redis", "rediss") and parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=f"/{TEST_DB}"))
    return url


@pytest.fixture(scope="module")
def prometheus_bins() -> tuple[str, str]:
    """``prometheus`` and ``promtool`` (installed with apt-get when missing)."""
    return prometheus_binaries()


class Prometheus:
    """A Prometheus process scraping one dispatchd target every second."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "dispatchd",
                                "static_configs": [{"targets": [target]}]}],
        }
        path = workdir / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("prometheus to be ready", lambda: get(self.url + "/-/ready")[0] == 200)

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", (promql, doc)
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def rule_queries(self) -> dict[str, str]:
        doc = json.loads(get(self.url + "/api/v1/rules")[1])
        return {r["name"]: r["query"] for g in doc["data"]["groups"] for r in g["rules"]}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class DaemonProcess:
    """``dispatchd run`` against the test server with its ops listener on a free port."""

    def __init__(self, workdir: Path, redis_url: str, tenants: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
        env.update(DISPATCHD_REDIS_URL=redis_url, DISPATCHD_TENANTS=tenants,
                   DISPATCHD_METRICS_PORT=str(self.port), DISPATCHD_METRICS_SAMPLE_S="0.5",
                   DISPATCHD_ADMIN_ENABLED="false", DISPATCHD_DATA_DIR=str(workdir / "data"))
        self.log = (workdir / "dispatchd.log").open("wb")
        self.proc = subprocess.Popen([str(BIN), "run"], env=env, cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until("dispatchd /readyz", lambda: get(self.url + "/readyz")[0] == 200)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.log.close()
        return code


@pytest.fixture
async def test_redis(redis_url: str) -> AsyncIterator[tuple[str, aioredis.Redis]]:
    url = db_url(redis_url)
    client = aioredis.Redis.from_url(url, decode_responses=False)
    try:
        yield url, client
    finally:
        await client.aclose()


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Started processes, stopped at the end whatever happens."""
    started: list[Any] = []
    try:
        yield started
    finally:
        for p in reversed(started):
            p.stop()


def substitute(expr: str) -> str:
    """A dashboard query with Grafana's variables as "All" would send it."""
    for name, value in (("$__rate_interval", "30s"), ("$tenant", ".*"), ("$group", ".*")):
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def dashboard_queries() -> dict[str, str]:
    out: dict[str, str] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            out[f"{panel['title']} [{target['refId']}]"] = substitute(target["expr"])
    return out


def exposed_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}


# ------------------------------------------------------------------------- traffic


async def configure(engine: Engine, tenant: str) -> None:
    """sales: 1 s service level and reply SLA, overflow to bot after 2.5 s; support:
    1 s queue warning and nobody to serve it. Tickets: claims (tia) and audit (ash);
    backlog, where nobody serves the urgent tickets, due in 0.5 s."""
    t0 = now_ms()
    off = {"silence_remind_ms": 0, "silence_preclose_ms": 0, "silence_close_ms": 0}
    await engine.configure_group(tenant, t0, "bot", **off)
    await engine.configure_group(tenant, t0, "sales", service_level_ms=1000,
                                 service_level_target=0.8, reply_sla_ms=1000,
                                 tiers=[{"after_ms": 2500, "groups": ["bot"]}], **off)
    await engine.configure_group(tenant, t0, "support", queue_warning_ms=1000, **off)
    await engine.configure_agent(tenant, t0, "ann", capacity=2, abilities={"sales": 1.0})
    await engine.configure_agent(tenant, t0, "robot", capacity=1, abilities={"bot": 1.0})
    for group, agent in (("claims", "tia"), ("audit", "ash"), ("backlog", None)):
        await engine.configure_group(tenant, t0, group, **off)
        if agent:
            await engine.configure_agent(tenant, t0, agent, capacity=1,
                                         abilities={group: 1.0})
    await engine.apply(tenant, t0, ConfigureTicketType(type="claim"))
    await engine.apply(tenant, t0, ConfigureTicketType(type="urgent", first_response_ms=500,
                                                       resolution_ms=500))


async def steal(redis: aioredis.Redis, tenant: str) -> None:
    """Another replica holds ``tenant``, and a command has waited in its stream 120 s."""
    await redis.set(keys.key("lease", tenant), "another-replica", px=300_000)
    old = f"{now_ms() - 120_000}-0"
    await redis.xadd(keys.key("inbound", tenant), {"json": b'{"type":"agent_ready",'
                     b'"id":"x","agent":"nobody"}'}, id=old)


async def play(redis: aioredis.Redis, tenant: str) -> None:
    """6 sales customers: 2 answered in time, 3 late (one by overflow), 1 abandoned late;
    a first response; a support customer nobody serves; a gateway sending malformed
    commands (10: the dead-letter alert wants a sustained rate, not one)."""
    gw = GatewayClient(redis, tenant, gateway="web")
    await gw.agent_status("ann", "online")
    await gw.agent_status("robot", "online")
    for i in range(1, 7):
        await gw.arrive(f"c{i}", "sales")
    await gw.arrive("w1", "support")
    for _ in range(10):
        await redis.xadd(keys.key("inbound", tenant), {"json": b"{broken"})
    await asyncio.sleep(0.5)
    await gw.agent_message("c2", "ann")
    await asyncio.sleep(1.0)
    await gw.customer_leave("c6")
    await asyncio.sleep(1.5)  # the tier to bot opens at 2.5 s: c3 goes to robot
    await gw.close_session("c1")
    await gw.close_session("c2")  # c4, c5 go to ann


async def play_tickets(redis: aioredis.Redis, tenant: str) -> None:
    """k1 bounces between claims and audit: 3 loops into claims, 2 into audit, then is
    answered and closed; u1 and u2 wait in backlog and go overdue."""
    async def send(**cmd: Any) -> None:
        cmd["id"] = uuid.uuid4().hex
        await redis.xadd(keys.key("inbound", tenant), {"json": json.dumps(cmd)})

    gw = GatewayClient(redis, tenant, gateway="web")
    await gw.agent_status("tia", "online")
    await gw.agent_status("ash", "online")
    await send(type="create_ticket", ticket="k1", ticket_type="claim", group="claims",
               by="crm")
    for hop in range(6):
        here, there = ("tia", "audit") if hop % 2 == 0 else ("ash", "claims")
        await send(type="forward_ticket", ticket="k1", agent=here, to_group=there,
                   note=f"hop {hop + 1}")
    await send(type="respond_ticket", ticket="k1", agent="tia")
    await send(type="close_ticket", ticket="k1", agent="tia", resolution="paid")
    for ticket in ("u1", "u2"):
        await send(type="create_ticket", ticket=ticket, ticket_type="urgent",
                   group="backlog", by="crm")


async def test_dashboard_and_alert_queries_return_data(
    prometheus_bins, test_redis, processes, tmp_path
):
    url, redis = test_redis
    tenant, stuck = f"obs{uuid.uuid4().hex[:8]}", f"lag{uuid.uuid4().hex[:8]}"
    vanish = f"van{uuid.uuid4().hex[:8]}"
    engine = Engine(redis)
    await configure(engine, tenant)
    await steal(redis, stuck)
    daemon = await asyncio.to_thread(DaemonProcess, tmp_path, url,
                                     f"{tenant},{stuck},{vanish}")
    processes.append(daemon)
    prom = await asyncio.to_thread(Prometheus, prometheus_bins[0], tmp_path,
                                   f"127.0.0.1:{daemon.port}")
    processes.append(prom)
    # the per-group counters are scraped at 0 before the traffic, so increase() sees it
    initialised = f'dispatchd_answered_total{{tenant="{tenant}",group="sales"}}'
    await asyncio.to_thread(wait_until, "the first scrape",
                            lambda: len(prom.query(initialised)) == 2)
    await play(redis, tenant)
    await play_tickets(redis, tenant)
    # a tenant's inbound stream (its consumer group with it) vanishes: DispatchdStateLost
    await redis.delete(keys.key("inbound", vanish))

    queries = dashboard_queries()
    rules = await asyncio.to_thread(prom.rule_queries)
    assert set(rules) == {"DispatchdServiceLevelBelowTarget", "DispatchdOldestWaitAboveWarning",
                          "DispatchdReplySlaBreaches", "DispatchdDeadLetters",
                          "DispatchdStreamLagging", "DispatchdStateLost",
                          "DispatchdOverdueTicketsGrowing",
                          "DispatchdTicketForwardingLoops", "DispatchdDown"}
    down = rules.pop("DispatchdDown")
    queries.update({f"alert {name}": q for name, q in rules.items()})
    empty = await asyncio.to_thread(wait_for_data, prom, queries)
    assert empty == [], f"queries without data: {empty}"

    status, text = get(daemon.url + "/metrics")
    assert status == 200
    names = exposed_names(text.decode())
    for name, q in {**queries, "alert DispatchdDown": down}.items():
        used = set(re.findall(r"\b(dispatchd_\w+)", q))
        assert used <= names, (name, used - names)

    sl = prom.query(rules["DispatchdServiceLevelBelowTarget"])
    assert [(r["metric"]["tenant"], r["metric"]["group"]) for r in sl] == [(tenant, "sales")]
    assert float(sl[0]["value"][1]) == pytest.approx(2 / 6, abs=0.05)
    loops = prom.query(rules["DispatchdTicketForwardingLoops"])
    assert [(r["metric"]["tenant"], r["metric"]["group"]) for r in loops] == [(tenant, "claims")]
    state = prom.query(rules["DispatchdStateLost"])
    assert [r["metric"]["what"] for r in state] == ["consumer_group"]  # not library
    assert float(state[0]["value"][1]) > 0
    overdue = prom.query(rules["DispatchdOverdueTicketsGrowing"])
    assert [(r["metric"]["tenant"], r["value"][1]) for r in overdue] == [(tenant, "2")]

    assert await asyncio.to_thread(daemon.stop) == 0
    empty = await asyncio.to_thread(wait_for_data, prom, {"alert DispatchdDown": down}, 10.0)
    assert empty == []


def wait_for_data(prom: Prometheus, queries: dict[str, str], timeout: float = DEADLINE_S
                  ) -> list[str]:
    """Poll until every query returns data; the names of those that still do not."""
    deadline = time.monotonic() + timeout
    pending = dict(queries)
    while True:
        pending = {name: q for name, q in pending.items() if not prom.query(q)}
        if not pending or time.monotonic() > deadline:
            return sorted(pending)
        time.sleep(1.0)
