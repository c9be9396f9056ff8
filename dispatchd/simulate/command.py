"""The ``simulate`` subcommand's arguments and help (a documented contract)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from dispatchd.simulate.run import POLICY_CHOICES, SimulateOptions, run

DESCRIPTION = (
    "What-if simulator: play a contact centre described by SCENARIO (a TOML file, or "
    "JSON if its name ends in .json; format in docs/simulate.md, example in "
    "examples/centre.toml) on a virtual clock, and compare routing policies on the very "
    "same customers.",
    "Input: skill groups with their overflow tiers and routing settings, agent pools "
    "(count, capacity, abilities, handle-time factors, shifts), Poisson arrival streams "
    "per group with an hourly profile (or a recorded trace, --trace), handle-time and "
    "patience distributions. Customers are drawn once, with their handle time and "
    "patience, so every policy gets identical input.",
    "Policies: 'spec' drives the real Lua routing engine (readiness score, ability "
    "preference, priority, overflow tiers; docs/routing.md) with now_ms = virtual time, "
    "on an embedded Valkey started in a temporary directory, or on --redis-url (never "
    "DISPATCHD_REDIS_URL), in a fresh tenant sim-<random> whose keys are deleted at the "
    "end; lifecycle timers are off. 'longest-idle' and 'round-robin' are Python "
    "baselines with the same queues, priorities and overflow tiers that choose agents "
    "by longest idle time or in rotation, and let a free agent take the longest-waiting "
    "customer whatever its ability. The report says which run used which.",
    "Output on stdout: the runs (engine, engine calls, wall time), then per policy: "
    "offered, answered, service level (answered within the scenario's service_level_s "
    "/ offered), ASA, 90th percentile wait, P(wait>0), abandonment, occupancy, overflow "
    "share, agent fairness (Jain's index of occupancy per pool) and the worst group's "
    "service level; Erlang C's figures when the scenario is an M/M/c queue; then per "
    "group and per agent pool. A PNG (--out) plots service level and ASA by hour, "
    "service level by group and the spread of agent occupancy; without matplotlib "
    "(pip install 'dispatchd[sim]') the plot is skipped with a note. Progress goes to "
    "stderr unless --quiet.",
    "Trace files: CSV with a header, or JSON lines, one customer per row: time_s "
    "(seconds from the start, required), group (required), priority (default 0), "
    "handle_s and patience_s (drawn from the scenario when absent; patience_s 'inf' "
    "never abandons); other columns are ignored.",
)

EXIT_STATUS = (
    "exit status: 0 done, 1 the server could not be started or reached or refused a "
    "command, or an output file could not be written, 2 bad command line, scenario or "
    "trace, 130 interrupted (Ctrl-C)"
)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=88)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number greater than 0: {text!r}")
    return value


def add_parser(commands: Any) -> None:
    """Add ``simulate`` to the ``dispatchd`` subcommands."""
    parser = commands.add_parser(
        "simulate",
        help="what-if simulation of a contact centre: SPEC routing vs baselines",
        description="\n\n".join(_wrap(p) for p in DESCRIPTION),
        epilog=_wrap(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = parser.add_argument
    arg("scenario", metavar="SCENARIO", help="scenario file (.toml, or .json)")
    arg("--hours", type=_positive, metavar="H",
        help="arrivals stop after H simulated hours; the run then goes on until every "
        "customer is served or has left, agents keeping to their shifts for up to 24 h "
        "more (default: the scenario's hours; with --trace, the trace's last arrival)")
    arg("--seed", type=int, metavar="N",
        help="seed of the arrivals, handle times and patience (default: the scenario's)")
    arg("--policy", choices=POLICY_CHOICES, default="all",
        help="policy to run: spec (real Lua engine), longest-idle or round-robin (Python "
        "baselines), or all three (default: all)")
    arg("--trace", metavar="FILE",
        help="recorded arrivals (.csv, or JSON lines) instead of the scenario's Poisson "
        "streams; format above")
    arg("--out", metavar="PNG", default="simulate.png",
        help="where to write the plot (default: simulate.png)")
    arg("--no-plot", dest="out", action="store_const", const=None, help="write no plot")
    arg("--json", dest="json_out", metavar="FILE",
        help="also write every figure as JSON to FILE")
    arg("--volume", type=_positive, default=1.0, metavar="FACTOR",
        help="multiply every Poisson arrival rate by FACTOR (default: 1)")
    arg("--staff", type=_positive, default=1.0, metavar="FACTOR",
        help="multiply the size of every agent pool by FACTOR, rounded (default: 1)")
    arg("--redis-url", metavar="URL",
        help="run the spec policy on this Redis (>= 7.0) or Valkey (>= 7.2) instead of an "
        "embedded Valkey")
    arg("--quiet", action="store_true", help="no progress lines on stderr")


def main(args: argparse.Namespace) -> int:
    """Run ``dispatchd simulate`` with parsed ``args``; returns the exit status."""
    return run(SimulateOptions(
        scenario=args.scenario, hours=args.hours, seed=args.seed, policy=args.policy,
        trace=args.trace, out=args.out, json_out=args.json_out, volume=args.volume,
        staff=args.staff, redis_url=args.redis_url, quiet=args.quiet,
    ))
