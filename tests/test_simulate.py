"""``dispatchd simulate``: scenarios and traces, the event loop on the real engine, the
baseline policies, the policy comparison, the plot and the command itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from dispatchd.daemon import redact
from dispatchd.engine import Engine
from dispatchd.messages import (
    Arrive,
    Assigned,
    Command,
    ConfigureAgent,
    ConfigureGroup,
    Outcome,
    ReleaseSession,
    SetAgentStatus,
)
from dispatchd.simulate import loop, plot, report, run, scenario, workload
from dispatchd.simulate.baseline import POLICIES, BaselineRouter
from dispatchd.simulate.loop import LuaRouter, Router, Simulation

BIN = Path(sys.executable).parent / "dispatchd"
REPO = Path(__file__).resolve().parent.parent
HOUR = 3_600_000

#: Two groups that overflow into each other, a multi-skill pool that is slower outside
#: its main skill and leaves early, a late pool, priorities and impatient customers.
TINY = """
name = "tiny"
hours = 2
seed = 3
patience = { dist = "exponential", mean_s = 120 }
handle = { dist = "exponential", mean_s = 180 }

[[groups]]
name = "sales"
tiers = [{ after_s = 30, groups = ["care"] }]

[[groups]]
name = "care"
tiers = [{ after_s = 60, groups = ["sales"] }]

[[agents]]
name = "s"
count = 4
capacity = 2
abilities = { sales = 1.0 }

[[agents]]
name = "c"
count = 4
capacity = 2
abilities = { care = 1.0, sales = 0.5 }
handle_factor = { sales = 1.3 }
shifts = [[0, 1.5]]

[[agents]]
name = "late"
count = 2
capacity = 2
abilities = { care = 1.0 }
shifts = [[1, 24]]

[[arrivals]]
group = "sales"
rate_per_hour = 120

[[arrivals]]
group = "care"
rate_per_hour = 100
priority = 1
"""

ONE_AGENT = """
handle = { dist = "constant", value_s = 60 }
[[groups]]
name = "g"
[[agents]]
name = "a"
abilities = { g = 1.0 }
"""


def parse(text: str) -> scenario.Scenario:
    return scenario.parse(text.encode(), "toml")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}


# ------------------------------------------------------------------ scenario and traces


def test_example_scenario_is_a_500_agent_centre() -> None:
    s = scenario.load(REPO / "examples" / "centre.toml")
    work = workload.build(s, hours=1)
    assert len(work.agents) == 500
    assert {g.name for g in s.groups} == {"presale", "aftersale", "billing", "vip", "english"}
    assert 200 < len(work.customers) < 2000  # the quietest hour of the day
    assert len(work.agents) == sum(p.count for p in s.agents)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "sales"', 'name = "sa les"'), "group 'sa les' is not an id"),
        (('groups = ["care"]', 'groups = ["nope"]'), "tier names unknown group 'nope'"),
        (('groups = ["care"]', 'groups = ["sales"]'), "names the group itself"),
        (("after_s = 60", "after_s = -1"), "Expected `float` >= 0"),
        (("rate_per_hour = 120", "rate_per_hour = 120\nrate = 3"), "unknown field `rate`"),
        (("count = 4\ncapacity = 2\nabilities = { sales",
          "count = 4\ncapacity = 0\nabilities = { sales"), "Expected `int` >= 1"),
        (("shifts = [[0, 1.5]]", "shifts = [[20, 45]]"), "start < end <= start + 24"),
        (('mean_s = 180 }', 'mean_s = 180, sd_s = 1 }'), "unknown field `sd_s`"),
        (('handle = { dist = "exponential", mean_s = 180 }', 'handle = { dist = "none" }'),
         'dist "none" is only for patience'),
        (("abilities = { care = 1.0 }", "abilities = { bots = 1.0 }"),
         "names unknown group 'bots'"),
    ],
)
def test_bad_scenarios_are_refused_naming_the_problem(
    change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in TINY
    with pytest.raises(scenario.ScenarioError, match=None) as info:
        parse(TINY.replace(old, new, 1))
    assert message in str(info.value)


def test_scenario_files_toml_and_json(tmp_path: Path) -> None:
    s = parse(TINY)
    (tmp_path / "s.json").write_text(json.dumps({
        "groups": [{"name": "g"}], "agents": [{"name": "a", "abilities": {"g": 2}}],
        "arrivals": [{"group": "g", "rate_per_hour": 10}],
    }))
    assert scenario.load(tmp_path / "s.json").agents[0].abilities == {"g": 2.0}
    (tmp_path / "bad.toml").write_text("groups = [")
    with pytest.raises(scenario.ScenarioError, match="not valid TOML"):
        scenario.load(tmp_path / "bad.toml")
    with pytest.raises(scenario.ScenarioError, match="cannot read"):
        scenario.load(tmp_path / "missing.toml")
    assert s.handle_of("sales") == s.handle


def test_shifts_repeat_daily_and_run_past_midnight() -> None:
    pool = scenario.AgentPool(name="n", abilities={"g": 1.0}, shifts=[(22.0, 31.0)])
    assert workload.online_intervals(pool, 48 * HOUR) == [
        (0, 7 * HOUR), (22 * HOUR, 31 * HOUR), (46 * HOUR, 48 * HOUR)
    ]
    always = scenario.AgentPool(name="a", abilities={"g": 1.0})
    assert workload.online_intervals(always, 5) == [(0, 5)]


def test_poisson_arrivals_follow_the_profile() -> None:
    s = parse(TINY.replace("hours = 2", "hours = 4\nprofile = [1.0, 0.0, 3.0]"))
    work = workload.build(s, volume=2.0)
    per_hour = [sum(1 for c in work.customers if c.at_ms // HOUR == h) for h in range(4)]
    assert per_hour[1] == 0  # profile 0: nobody
    # rate 220/h x 2 (volume) x profile: 440, 0, 1320, 440 expected
    assert 350 < per_hour[0] < 530 and 1150 < per_hour[2] < 1500 and 350 < per_hour[3] < 530
    assert work.customers == workload.build(s, volume=2.0).customers  # seeded


def test_trace_csv_and_jsonl(tmp_path: Path) -> None:
    s = parse(ONE_AGENT)
    (tmp_path / "t.csv").write_text(
        "time_s,group,priority,handle_s,patience_s,note\n"
        "1.5,g,2,10,,first\n0,g,,,inf,\n"
    )
    (tmp_path / "t.jsonl").write_text(
        '{"time_s": 0, "group": "g", "patience_s": "inf"}\n\n'
        '{"time_s": 1.5, "group": "g", "priority": 2, "handle_s": 10}\n'
    )
    for name in ("t.csv", "t.jsonl"):
        work = workload.build(s, trace=tmp_path / name)
        assert [(c.at_ms, c.priority, c.handle_ms, c.patience_ms) for c in work.customers] == [
            (0, 0, 60_000, None), (1500, 2, 10_000, None)
        ]
        assert work.horizon_ms == 1501 and work.source == f"trace {tmp_path / name}"
    assert len(workload.build(s, trace=tmp_path / "t.csv", hours=0.0001).customers) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time_s,group\n1,nope\n", "t.csv:2: group 'nope' is not a group"),
        ("time_s,group\nsoon,g\n", "t.csv:2: time_s is not a number"),
        ("time_s,group\n-1,g\n", "time_s must be >= 0"),
        ("time_s,group,priority\n1,g,1.5\n", "priority is not an integer"),
        ("time_s,group,handle_s\n1,g,inf\n", "handle_s must be finite"),
        ("time_s,group\ninf,g\n", "t.csv:2: time_s must be finite"),
        ("group,when\ng,1\n", "the header must name time_s and group"),
    ],
)
def test_bad_traces_are_refused_with_their_line(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(scenario.ScenarioError) as info:
        workload.build(parse(ONE_AGENT), trace=tmp_path / "t.csv")
    assert message in str(info.value)


# ------------------------------------------------------------------------- event loop


def test_groups_are_configured_with_lifecycle_timers_off() -> None:
    fields = set(ConfigureGroup.__struct_fields__)
    unknown = fields - set(loop.TIMER_FIELDS) - set(loop.SETTING_FIELDS)
    assert not unknown, f"decide whether the simulator sets {unknown}"
    work = workload.build(parse(TINY), hours=0.1)
    cmds = loop.setup_commands(work)
    groups = [c for c in cmds if isinstance(c, ConfigureGroup)]
    # every group bare first (tiers may name each other in a cycle), then with tiers
    assert [(c.group, len(c.tiers)) for c in groups] == [
        ("sales", 0), ("care", 0), ("sales", 1), ("care", 1)
    ]
    for c in groups:
        assert all(getattr(c, name) == 0 for name in loop.TIMER_FIELDS if name in fields)
        if "service_level_ms" in fields:
            assert msgspec.structs.asdict(c)["service_level_ms"] == 20_000  # scenario's
    online = [c.agent for c in cmds if isinstance(c, SetAgentStatus)]
    assert online == [a.id for a in work.agents if a.online[0][0] == 0]  # not "late-*"
    assert len(online) == 8


async def test_loop_plays_a_trace_exactly_on_the_engine(
    engine: Engine, tenant: str, tmp_path: Path
) -> None:
    """One agent: c0 is served at once (60 s), c1 waits for it (59 s), c2 gives up after
    its 30 s of patience, c3 arrives when the agent is free again."""
    (tmp_path / "t.csv").write_text(
        "time_s,group,handle_s,patience_s\n0,g,,\n1,g,5,\n2,g,,30\n70,g,,\n"
    )
    work = workload.build(parse(ONE_AGENT), trace=tmp_path / "t.csv")
    routers: list[Router] = [LuaRouter(engine, tenant), BaselineRouter("longest-idle"),
                             BaselineRouter("round-robin")]
    for router in routers:
        rec = await Simulation(work, router).run()
        assert rec.wait_ms == [0, 59_000, -1, 0]
        assert rec.abandoned == [False, False, True, False]
        assert rec.end_ms == [60_000, 65_000, 32_000, 130_000]
        assert rec.agent == [0, 0, -1, 0]
    assert await engine.session(tenant, "c2") is not None  # the tenant was really used


Steps = list[tuple[int, list[Command]]]


async def run_commands(router: Router, steps: Steps) -> list[Assigned]:
    out: list[Assigned] = []
    for now, cmds in steps:
        for item in await router.apply(now, cmds):
            assert isinstance(item, Outcome), item
            out += [e for e in item.events if isinstance(e, Assigned)]
    return out


def agents_setup(*groups: str, **abilities: dict[str, float]) -> list[Command]:
    cmds: list[Command] = [ConfigureGroup(group=g) for g in groups]
    cmds += [ConfigureAgent(agent=a, capacity=1, abilities=ab) for a, ab in abilities.items()]
    return cmds


async def test_longest_idle_and_round_robin_choose_as_documented() -> None:
    setup = agents_setup("g", a={"g": 1.0}, b={"g": 1.0}, c={"g": 1.0})
    online: Steps = [(0, [SetAgentStatus(agent="a", status="online")]),
              (10, [SetAgentStatus(agent="b", status="online")]),
              (20, [SetAgentStatus(agent="c", status="online")])]
    serve: Steps = [(30, [Arrive(session="s1", group="g")]), (40, [ReleaseSession(session="s1")]),
             (50, [Arrive(session="s2", group="g")]), (60, [ReleaseSession(session="s2")]),
             (70, [Arrive(session="s3", group="g")]), (80, [ReleaseSession(session="s3")]),
             (90, [Arrive(session="s4", group="g")])]
    lia = await run_commands(BaselineRouter("longest-idle"), [(0, setup), *online, *serve])
    assert [e.agent for e in lia] == ["a", "b", "c", "a"]  # idle since 0, 10, 20, then 40
    rr = BaselineRouter("round-robin")
    got = await run_commands(rr, [(0, setup), *online, *serve[:1], *serve[2:3], *serve[4:5]])
    assert [e.agent for e in got] == ["a", "b", "c"]  # in turn, though a and b are free


async def test_free_agent_prefers_ability_in_spec_and_longest_wait_in_baselines(
    engine: Engine, tenant: str
) -> None:
    steps: Steps = [
        (0, agents_setup("g1", "g2", x={"g1": 1.0, "g2": 2.0})),
        (0, [Arrive(session="old", group="g1")]),
        (1000, [Arrive(session="new", group="g2")]),
        (2000, [SetAgentStatus(agent="x", status="online")]),
    ]
    spec = await run_commands(LuaRouter(engine, tenant), steps)
    assert [e.session for e in spec] == ["new"]  # SPEC 2.4: the higher ability
    for policy in POLICIES:
        got = await run_commands(BaselineRouter(policy), steps)
        assert [e.session for e in got] == ["old"]  # the longest wait


# ------------------------------------------------------------------- policy comparison


async def test_policy_comparison_on_identical_input(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    work = workload.build(parse(TINY))
    summaries, where = await run.simulate(work, list(run.POLICIES), redis_url)
    assert [(s.policy, s.engine) for s in summaries] == [
        ("spec", "lua"), ("longest-idle", "python"), ("round-robin", "python")
    ]
    for s in summaries:
        t = s.total
        assert t.offered == len(work.customers) > 300
        assert t.answered + t.abandoned + t.unserved == t.offered
        assert t.abandoned > 0 and t.overflow and 0 < t.overflow < 1
        assert s.fairness is not None and 0 < s.fairness <= 1
        assert set(s.groups) == {"sales", "care"}
        assert [p.agents for p in s.pools] == [4, 4, 2]
    assert summaries[0].calls > len(work.customers)  # the engine was really driven
    # the password of the URL is never printed
    assert where["spec"].startswith(redact(redis_url)) and "(deleted)" in where["spec"]
    assert await redis_client.keys("{sim-*") == []  # the run's tenant is gone

    text = report.render(work, summaries, where, "title")
    lines = text.splitlines()
    runs = next(i for i, line in enumerate(lines) if line.startswith("policy  "))
    assert "real Lua engine" in lines[runs + 2] and lines[runs + 2].startswith("spec ")
    assert "Python baseline" in lines[runs + 3] and "Python baseline" in lines[runs + 4]
    totals = next(i for i, line in enumerate(lines) if "SL20s%" in line and "ASA s" in line)
    header = lines[totals].split()
    assert header[:4] == ["policy", "engine", "offered", "answered"]
    for row, s in zip(lines[totals + 2 : totals + 5], summaries, strict=True):
        cells = row.split()
        assert cells[:3] == [s.policy, s.engine, f"{s.total.offered:,}"]
        assert cells[header.index("SL20s%")] == report.pct(s.total.service_level)
        assert cells[header.index("ASA")] == report.secs(s.total.asa_s)  # "ASA s": 2 cells
    assert "group" in text and "pool" in text and report.theory_line(work) is None

    again, _ = await run.simulate(work, ["longest-idle"])
    assert again[0].total == summaries[1].total  # seeded: the same figures again


def test_plot_is_skipped_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    work = workload.build(parse(TINY), hours=0.1)
    assert plot.plot(work, [], tmp_path / "x.png", "t") == plot.MISSING
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------- the command


def test_cli_prints_the_table_and_writes_png_and_json(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run(
        [str(BIN), "simulate", str(tmp_path / "tiny.toml"), "--hours", "1", "--seed", "5",
         "--out", str(tmp_path / "tiny.png"), "--json", str(tmp_path / "tiny.json")],
        env=clean_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("dispatchd simulate: tiny.toml (tiny)\n")
    for text in ("real Lua engine", "Python baseline", "tenant sim-", "(deleted)",
                 "SL20s%", f"plot written to {tmp_path / 'tiny.png'}"):
        assert text in out
    assert (tmp_path / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures = json.loads((tmp_path / "tiny.json").read_text())
    assert [r["policy"] for r in figures["runs"]] == ["spec", "longest-idle", "round-robin"]
    assert figures["hours"] == 1 and figures["customers"] == figures["runs"][0]["total"]["offered"]


def test_cli_one_policy_without_plot(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run(
        [str(BIN), "simulate", str(tmp_path / "tiny.toml"), "--hours", "0.5",
         "--policy", "round-robin", "--no-plot", "--quiet"],
        env=clean_env(), capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "round-robin" in proc.stdout
    assert "spec" not in proc.stdout.split("\n\n")[1]  # the runs table
    assert "plot" not in proc.stdout and not list(tmp_path.glob("*.png"))


def test_cli_unwritable_outputs_exit_1_after_the_tables(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run(
        [str(BIN), "simulate", "tiny.toml", "--hours", "0.2", "--policy", "longest-idle",
         "--quiet", "--json", "no/x.json", "--out", "no/x.png"],
        env=clean_env(), capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "longest-idle" in proc.stdout  # the tables came first
    assert "cannot write no/x.json" in proc.stderr and "cannot write no/x.png" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.toml"], "missing.toml: cannot read"),
        (["tiny.toml", "--trace", "missing.csv"], "missing.csv: cannot read"),
        (["tiny.toml", "--hours", "0"], "--hours: must be a number greater than 0"),
        (["tiny.toml", "--policy", "fifo"], "invalid choice: 'fifo'"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = subprocess.run([str(BIN), "simulate", *args], env=clean_env(), capture_output=True,
                          text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_cli_help_documents_the_options() -> None:
    proc = subprocess.run([str(BIN), "simulate", "--help"], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for text in ("SCENARIO", "--hours", "--seed", "--policy", "--trace", "--out", "--no-plot",
                 "--json", "--volume", "--staff", "--redis-url", "--quiet", "Erlang C",
                 "real Lua engine", "exit status", "docs/simulate.md"):
        assert text in proc.stdout
    top = subprocess.run([str(BIN), "--help"], env=clean_env(), capture_output=True,
                         text=True, timeout=30)
    assert "simulate" in top.stdout
