"""The synthetic contact centre the benchmarks share: groups, agents, a command stream."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from dispatchd.engine import Engine
from dispatchd.messages import (
    BatchItem,
    Command,
    ConfigureAgent,
    ConfigureGroup,
    SetAgentStatus,
)


def arrivals_and_closes(n: int, groups: int, seed: int) -> Iterator[tuple[str, str, str, int]]:
    """``n`` steps of ("arrive", session, group, priority) or ("close", session, "", 0).

    Half the steps close a random open session, so the centre stays busy with a queue;
    groups are picked with Zipf popularity (group i has weight 1/(i+1)).
    """
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(groups)]
    open_sessions: list[str] = []
    for i in range(n):
        if open_sessions and rng.random() < 0.5:
            yield "close", open_sessions.pop(rng.randrange(len(open_sessions))), "", 0
        else:
            sid = f"s{i}"
            group = f"g{rng.choices(range(groups), weights)[0]}"
            open_sessions.append(sid)
            yield "arrive", sid, group, rng.randint(-2, 5)


async def setup_centre(engine: Engine, tenant: str, groups: int, agents: int) -> None:
    """``groups`` default groups g0.., ``agents`` online agents a0.. with 3 skills, capacity 3."""
    rng = random.Random(2)
    cmds: list[Command] = [ConfigureGroup(group=f"g{g}") for g in range(groups)]
    for a in range(agents):
        skills = rng.sample(range(groups), k=min(3, groups))
        cmds.append(ConfigureAgent(agent=f"a{a}", capacity=3,
                                   abilities={f"g{g}": rng.randint(1, 3) for g in skills}))
        cmds.append(SetAgentStatus(agent=f"a{a}", status="online"))
    for i in range(0, len(cmds), 500):
        await engine.apply_batch(tenant, 0, cmds[i : i + 500])


async def server_cpu_s(client: aioredis.Redis) -> float:
    """The server's CPU seconds so far (user + system), from INFO."""
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def start_server(url: str | None) -> tuple[str, Any]:
    """``url``, or a fresh embedded Valkey without persistence: (url, server or None)."""
    if url is not None:
        return url, None
    import tempfile

    from dispatchd.embedded import EmbeddedValkey  # with a password, like the daemon's

    server = EmbeddedValkey(tempfile.mkdtemp(prefix="dispatchd-bench-"), append_only=False)
    server.start()
    return server.url, server


# ------------------------------------------------------------- the `dispatchd bench` centre


def zipf_weights(n: int) -> list[float]:
    """Zipf popularity of ``n`` items: item i has weight 1/(i+1)."""
    return [1 / (i + 1) for i in range(n)]


class Centre(msgspec.Struct, frozen=True, kw_only=True):
    """A synthetic contact centre: groups g0.. (Zipf popularity) and agents a0..

    Each agent has 3 distinct skills drawn with the groups' Zipf popularity, so supply
    follows demand; the first drawn is its primary skill (ability 3, others 1 or 2).
    """

    groups: int
    capacity: int
    skills: list[list[int]]
    """Per agent, its groups; the first is the primary one."""

    @property
    def agents(self) -> int:
        """How many agents."""
        return len(self.skills)

    @property
    def slots(self) -> int:
        """Sessions the agents can hold at once (agents x capacity)."""
        return self.agents * self.capacity


def build_centre(groups: int, agents: int, capacity: int, seed: int) -> Centre:
    """``agents`` agents of ``capacity`` over ``groups`` Zipf-popular groups."""
    rng = random.Random(seed)
    weights = zipf_weights(groups)
    skills: list[list[int]] = []
    for _ in range(agents):
        mine: list[int] = []
        while len(mine) < min(3, groups):
            g = rng.choices(range(groups), weights)[0]
            if g not in mine:
                mine.append(g)
        skills.append(mine)
    return Centre(groups=groups, capacity=capacity, skills=skills)


#: Settings every group the bench configures gets (``--record-decisions`` sets
#: ``record_decisions``, so a run can measure what decision records cost).
GROUP_SETTINGS: dict[str, Any] = {}


def centre_commands(centre: Centre, seed: int, *, online: bool) -> list[Command]:
    """Configure the centre's groups and agents (and set the agents online if ``online``)."""
    rng = random.Random(seed)
    # The queue-wait warning is off, so a deep preloaded queue does not fire one alert per
    # customer while it is measured; the other timers keep their defaults (they are
    # scheduled and cancelled as in production).
    cmds: list[Command] = [
        ConfigureGroup(group=f"g{g}", queue_warning_ms=0, **GROUP_SETTINGS)
        for g in range(centre.groups)
    ]
    for a, groups in enumerate(centre.skills):
        abilities = {f"g{g}": 3.0 if i == 0 else float(rng.randint(1, 2))
                     for i, g in enumerate(groups)}
        cmds.append(ConfigureAgent(agent=f"a{a}", capacity=centre.capacity, abilities=abilities))
    if online:
        cmds.extend(SetAgentStatus(agent=f"a{a}", status="online") for a in range(centre.agents))
    return cmds


class ArrivalStream:
    """A seeded, endless stream of arrivals: (group index, priority -2..5), Zipf groups."""

    def __init__(self, groups: int, seed: int) -> None:
        self._rng = random.Random(seed)
        self._cum = list(itertools.accumulate(zipf_weights(groups)))

    def next(self) -> tuple[int, int]:
        """The next arrival's group index and priority."""
        rng = self._rng
        g = bisect.bisect_left(self._cum, rng.random() * self._cum[-1])
        return min(g, len(self._cum) - 1), rng.randint(-2, 5)

    def take(self, n: int) -> list[tuple[int, int]]:
        """The next ``n`` arrivals."""
        return [self.next() for _ in range(n)]


async def apply_in_batches(
    engine: Engine, tenant: str, cmds: Sequence[Command], size: int = 1000, depth: int = 4,
    now_ms: int | None = None,
) -> list[BatchItem]:
    """``Engine.apply_batch`` over ``cmds`` in chunks of ``size``, ``depth`` at a time, at
    the wall clock (or at ``now_ms``)."""
    out: list[BatchItem] = []
    chunks = [cmds[i : i + size] for i in range(0, len(cmds), size)]
    for i in range(0, len(chunks), depth):
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        group = [engine.apply_batch(tenant, now, c) for c in chunks[i : i + depth]]
        for items in await asyncio.gather(*group):
            out.extend(items)
    return out
