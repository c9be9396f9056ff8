"""The ``dispatchd`` command line. Its ``--help`` text is a documented contract."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import Any

from dispatchd import daemon, demo, gateway_users
from dispatchd.keys import ID_RE
from dispatchd.settings import CONFIG_VAR, Settings, SettingsError, defaults, env_var, field_docs
from dispatchd.simulate import command as simulate_command

DESCRIPTION = (
    "Redis-centric dispatch daemon for customer service: routes waiting customers to "
    "agents by skill group, priority, overflow and sticky rules, keeping all routing "
    "state in Redis (or Valkey)."
)

RUN_DESCRIPTION = (
    "Start the daemon. Without DISPATCHD_REDIS_URL it starts its own Valkey on loopback "
    "with data in DISPATCHD_DATA_DIR (readable by its owner only), protected by the "
    "password in DISPATCHD_DATA_DIR/valkey.password (made at the first start); on Linux "
    "that server stops with the daemon even when the daemon is killed. With it, it "
    "connects to that server. Gateways get Redis users of their own ('dispatchd "
    "gateway-user --help'). It checks the "
    "server version (Redis >= 7.0 or Valkey >= 7.2), loads every routing script onto the "
    'server (a broken script stops it here), logs "ready", then consumes the gateway '
    "streams of its tenants (docs/protocol.md) and serves the admin HTTP API on "
    "DISPATCHD_ADMIN_HOST:DISPATCHD_ADMIN_PORT (docs/admin.md; OpenAPI at "
    "/schema/openapi.json). On the first start against a server without admin tokens it "
    "prints a bootstrap admin token once on stdout (\"bootstrap admin token: dsp_...\") "
    "unless DISPATCHD_ADMIN_BOOTSTRAP_TOKEN sets it. SIGTERM or SIGINT stops it cleanly, "
    "stopping the embedded Valkey too."
)

DEMO_DESCRIPTION = (
    "Play a small contact centre for a while, on real time, and print what the router "
    "does. Without --redis-url (or DISPATCHD_REDIS_URL) it starts its own Valkey in a "
    "temporary directory, deleted at the end; it runs the gateway consumer in-process.",
    "The centre: groups presale, aftersale, vip and bot; vip overflows to aftersale after "
    "3 s and to bot after 8 s, presale and aftersale to bot after 12 s. Six agents: ann "
    "(presale, capacity 2), bob (presale and aftersale, 3), cat (aftersale, 2), dan "
    "(aftersale, 1), eve (vip, 1, slow to reply) and bot (bot, 3). Timers: reply SLA 4 s, "
    "queue warning 5 s, position update 5 s, silence reminder / pre-close / close 4 / 7 / "
    "10 s, confirmation close 6 s.",
    "Customers arrive at random (--rate per second, --seed) after a fixed cast of six who "
    "make an overflow assignment, a reply-SLA alert and a customer leaving the queue "
    "happen within the first 5 s, and a transfer, a pre-close and system closes within "
    "the default 40 s, whatever the seed. Customers and agents "
    "act only through gateway commands on the tenant's inbound stream: replies after "
    "random delays, silent customers, transfers to another group, close requests and "
    "confirmations, customers leaving the queue, and cat going offline with handover at "
    "45 % of the run and back online at 70 %.",
    "Output: one line per outbound event (seconds since the start, type, session, then "
    "its fields; coloured on a terminal), then a summary: customers arrived, served, "
    "served by overflow (per tier), abandoned, still queued, average wait, closes by "
    "reason, alerts by kind, events by type. Ctrl-C (SIGINT) or SIGTERM ends the run "
    "early, still with the summary.",
    "With --redis-url the tenant must be unused or hold an earlier demo's data (deleted "
    "first); the data is left on the server afterwards, and the tenant is not added to "
    "dispatchd:tenants, so a daemon on that server leaves it alone.",
)

DEMO_EXIT_STATUS = (
    "exit status: 0 the demo ran (also when stopped early), 1 the server could not be "
    "started or reached, 2 bad command line or a tenant holding other data"
)

EXIT_STATUS = "exit status: 0 clean stop, 1 start-up failure, 2 bad settings or bad command line"


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(text, width=88, initial_indent=indent, subsequent_indent=indent)


def _environment_help() -> str:
    docs = field_docs()
    lines = ["environment (each setting can also be a key of the DISPATCHD_CONFIG file):"]
    for name, default in defaults().items():
        shown = "unset" if default is None else repr(default) if default == "" else default
        lines.append(f"  {env_var(name)} (default: {shown})")
        lines.append(_wrap(docs.get(name, ""), indent="      "))
    lines.append(f"  {CONFIG_VAR} (default: unset)")
    lines.append(
        _wrap(
            "Path of a TOML file whose top-level keys are the settings above in lower "
            'case without the prefix (redis_url = "redis://..."). Environment variables '
            "win over the file; an empty variable counts as unset.",
            indent="      ",
        )
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``dispatchd --help`` shows what it accepts)."""
    parser = argparse.ArgumentParser(
        prog="dispatchd",
        description=_wrap(DESCRIPTION),
        epilog=_wrap(
            "Settings come from DISPATCHD_* environment variables, listed by "
            "'dispatchd run --help'. " + EXIT_STATUS + "."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"dispatchd {package_version('dispatchd')}",
        help="print the version and exit",
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    commands.add_parser(
        "run",
        help="start the daemon; it runs until SIGTERM or SIGINT",
        description=_wrap(RUN_DESCRIPTION),
        epilog=_environment_help()
        + "\n\n"
        + _wrap(
            "logs: one line per event on stderr, a JSON object with ts, level, logger, msg "
            "and fields (DISPATCHD_LOG_FORMAT=text for a terminal)."
        )
        + "\n\n"
        + EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_demo_parser(commands)
    _add_bench_parser(commands)
    simulate_command.add_parser(commands)
    gateway_users.add_parser(commands)
    _add_dev_cluster_parser(commands)
    commands.add_parser(
        "version",
        help="print the version and exit",
        description="Print dispatchd's version and exit.",
    )
    return parser


DEV_CLUSTER_DESCRIPTION = (
    "Start a local Redis Cluster to try cluster mode: 3 masters and 3 replicas (one per"
    " master) of the bundled Valkey on 127.0.0.1, ports BASE_PORT to BASE_PORT+5 (cluster"
    " bus: each port + 10000), with the password in DIR/valkey.password (made on first use)."
    " It prints the cluster URL for DISPATCHD_REDIS_URL (redis+cluster://...), runs until"
    " Ctrl-C or SIGTERM, then stops every node. The nodes keep nothing: each start is an"
    " empty cluster."
)


def _add_dev_cluster_parser(commands: Any) -> None:
    p = commands.add_parser(
        "dev-cluster",
        help="start a local 3-master, 3-replica Valkey Cluster until Ctrl-C",
        description=_wrap(DEV_CLUSTER_DESCRIPTION),
        epilog=_wrap("exit status: 0 stopped by Ctrl-C or SIGTERM, 1 the cluster could"
                     " not start (the message says which node and why)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dir", default=".dispatchd-cluster", metavar="DIR",
                   help="where the nodes keep their files (default: .dispatchd-cluster)")
    p.add_argument("--base-port", type=_port, default=7000, metavar="PORT",
                   help="client port of the first node; the six use PORT..PORT+5"
                        " (default: 7000)")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535 - 5:
        raise argparse.ArgumentTypeError(f"must be 1-65530 (six ports from it): {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number greater than 0: {text!r}")
    return value


def _tenant_id(text: str) -> str:
    if not ID_RE.match(text):
        raise argparse.ArgumentTypeError(f"not a tenant id (A-Z a-z 0-9 _ . @ -, 1-64): {text!r}")
    return text


def _add_demo_parser(commands: Any) -> None:
    demo_parser = commands.add_parser(
        "demo",
        help="play a small contact centre live and print its events",
        description="\n\n".join(_wrap(p) for p in DEMO_DESCRIPTION),
        epilog=_wrap(DEMO_EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = demo_parser.add_argument
    arg(
        "--duration",
        type=_positive,
        default=40.0,
        metavar="SECONDS",
        help="how long the demo runs, in seconds (default: 40)",
    )
    arg("--seed", type=int, default=1, help="seed of the random customers and delays (default: 1)")
    arg(
        "--rate",
        type=_positive,
        default=0.6,
        metavar="PER_SECOND",
        help="mean customer arrivals per second after the cast (default: 0.6)",
    )
    arg(
        "--redis-url",
        metavar="URL",
        help="use this Redis/Valkey instead of an embedded one (default: "
        "DISPATCHD_REDIS_URL if set)",
    )
    arg(
        "--tenant",
        type=_tenant_id,
        default="demo",
        help="tenant id the demo plays in (default: demo)",
    )
    arg("--quiet", action="store_true", help="print only the summary, not every event")


def _demo(args: argparse.Namespace) -> int:
    url = args.redis_url
    if url is None:
        try:
            url = Settings.from_env().redis_url
        except SettingsError as exc:
            print(f"dispatchd: {exc}", file=sys.stderr)
            return daemon.EXIT_SETTINGS
    daemon.configure_logging(Settings(log_level="WARNING", log_format="text"))
    return demo.run(
        demo.DemoOptions(
            duration=args.duration,
            seed=args.seed,
            rate=args.rate,
            redis_url=url,
            tenant=args.tenant,
            quiet=args.quiet,
        )
    )


BENCH_DESCRIPTION = (
    "Measure dispatchd on this machine and print the figures. Starts its own Valkey "
    "(append-only file off; jemalloc when installed, see --server-malloc) in a temporary "
    "directory, or uses --redis-url; starts the real daemon (python -m dispatchd run) as a "
    "child process; drives it through the gateway "
    "streams with an open-loop load generator that timestamps every command, and simulated "
    "agents that reply (agent_message) 0.1-0.3 handle times after each assignment and "
    "close the session (close_session) after 0.5-1.5 handle times (a handle time is 1 s, "
    "0.3 s with --quick). Needs a source checkout (the bench/ directory next to the "
    "dispatchd package).",
    "Rates are gateway commands per second unless said otherwise; each customer makes 3 "
    "commands (arrive, agent_message, close_session), so customers/s = commands/s / 3, the "
    "unit BullMQ is compared in. CPU per command comes from the server's INFO "
    "used_cpu_sys + used_cpu_user and the daemon's /proc/<pid>/stat.",
    "Output: progress on stderr; result lines on stdout, then one line 'RESULT key=value "
    "...' for scripts (values have no spaces). A full run takes about 15 minutes on 2 cores; "
    "--quick under a minute once BullMQ is installed. On an external server the bench "
    "uses the tenants dispatchd-bench, dispatchd-bench-cal, dispatchd-bench-ops and "
    "dispatchd-bench-sweep-<agents> and the BullMQ prefix dispatchd-bench, deletes their "
    "keys before and after and never flushes the server; "
    "durability switches appendonly with CONFIG SET and restores it.",
)

BENCH_SCENARIO_HELP = {
    "ceiling": "the server's own ceiling: a trivial EVALSHA and a script making as many "
    "Redis calls as one assignment on the gateway path (counted with INFO commandstats), "
    "each pipelined 100 per round trip.",
    "ops": "Redis CPU per operation type on the daemon's path: FCALL dispatchd_gateway "
    "straight from the bench, 100 commands per call, 20,000 of each (2,000 with --quick) "
    "in its own tenant: arrive assigned, arrive queued, an agent becoming ready taking a "
    "queued customer, agent_message, close_session with and without a queue, and per "
    "call a tick with nothing due and an empty call; from INFO commandstats (time inside "
    "FCALL) and INFO cpu.",
    "sweep": "Redis CPU per command of one workload (agent_message, close_session, "
    "arrive; FCALL dispatchd_gateway straight from the bench, 100 per call) on centres "
    "of 500, 5,000 and 50,000 agents (500 and 5,000 with --quick), each set up in its "
    "own tenant and filled to capacity with a queue first; the largest/smallest ratio "
    "shows whether a path grows with the number of agents.",
    "throughput": "5,000 agents (500 with --quick) in 50 skill groups of Zipf "
    "popularity; the command rate rises step by step until p99 command->event latency "
    "exceeds 250 ms, the inbound backlog grows, or the generator cannot send the rate (a "
    "failed step is tried once more); reports the max sustained rate.",
    "latency": "p50/p99/p99.9 arrival->assignment latency at 1k, 5k and 20k commands/s; a "
    "rate that is not sustained is reported as such, with the rate achieved and the "
    "backlog.",
    "scale": "1k, 10k, 100k and 1M customers queued (1k and 10k with --quick), preloaded "
    "through Engine.apply_batch while the daemon is paused: the daemon's throughput on a "
    "fixed workload, the largest/smallest ratio, Redis bytes per queued customer and the "
    "preload rate.",
    "durability": "the scale sizes again with the append-only file on (appendfsync "
    "everysec), against off.",
    "bullmq": "BullMQ (npm bullmq, installed on first use into ~/.cache/dispatchd-bench) "
    "on the same server and arrival stream, ramped the same way: skill groups as queues "
    "with priorities, agents as workers with concurrency = capacity; then pooled (one "
    "worker per queue). bullmq=unavailable, with the reason, when node or npm is missing "
    "or the install fails.",
    "multitenant": "not run by default (it adds about half the full run's time; name it in "
    "--scenarios): 30 tenants of Zipf sizes (tenant i has a share 1/(i+1) of 5,000 agents, "
    "600 with --quick, at least 5 each, and the same share of the arrivals; the tenants "
    "dispatchd-bench-mt-00 .. -29) run (a) on the server and (b) on a 3-master Valkey "
    "Cluster the bench starts on loopback (the bundled Valkey, no replicas, jemalloc "
    "preloaded as --server-malloc says), each with one dispatchd run serving all 30: a "
    "fixed-rate step (5,000 commands/s, 2,000 with --quick) for p99 (on the cluster then "
    "a second daemon replica joins, the tenants each replica holds once they settle are "
    "reported, the step is run again with both and the second replica stops), then the "
    "command rate ramped as in throughput. Reports per setup the max sustained rate "
    "(mt_single_max_cmd_per_s, "
    "mt_cluster_max_cmd_per_s), p99, Redis CPU per command overall and per shard, each "
    "shard's share of a core at the max rate (mt_cluster_shard_cpu_share=a/b/c), tenants "
    "and commands per shard (evenness max/mean) and tenants per daemon replica.",
}

BENCH_EXIT_STATUS = (
    "exit status: 0 the bench ran (also when a rate is not sustained or BullMQ is "
    "unavailable), 1 a server or the daemon could not be started, or bench/ is not "
    "importable, 2 bad command line, 130 interrupted"
)


BENCH_SCENARIOS = tuple(BENCH_SCENARIO_HELP)
#: What runs without --scenarios: every scenario but multitenant.
BENCH_DEFAULT_SCENARIOS = tuple(s for s in BENCH_SCENARIOS if s != "multitenant")


def _bench_description() -> str:
    intro, *rest = BENCH_DESCRIPTION
    scenarios = ["scenarios (--scenarios; all but multitenant by default, run in this "
                 "order):"]
    for name, text in BENCH_SCENARIO_HELP.items():
        scenarios.append(textwrap.fill(text, width=88, initial_indent=f"  {name:<12}",
                                       subsequent_indent=" " * 14))
    return "\n\n".join([_wrap(intro), "\n".join(scenarios), *map(_wrap, rest)])


def _scenario_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in BENCH_SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"not a list of {', '.join(BENCH_SCENARIOS)}: {text!r}")
    return names


def _add_bench_parser(commands: Any) -> None:
    bench_parser = commands.add_parser(
        "bench",
        help="benchmark the daemon against the server's ceiling and BullMQ",
        description=_bench_description(),
        epilog=_wrap(BENCH_EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    arg = bench_parser.add_argument
    arg("--quick", action="store_true",
        help="500 agents, 0.3 s handle time, 1.5 s steps, scale 1k and 10k, failed "
        "steps not retried: under a minute")
    arg("--scenarios", type=_scenario_list, default=BENCH_DEFAULT_SCENARIOS, metavar="LIST",
        help="comma-separated subset of " + ",".join(BENCH_SCENARIOS)
        + " (default: all but multitenant)")
    arg("--redis-url", metavar="URL",
        help="benchmark this Redis (>= 7.0) or Valkey (>= 7.2) instead of an embedded "
        "Valkey (DISPATCHD_REDIS_URL is not used here)")
    arg("--server-malloc", choices=("auto", "jemalloc", "libc"), default="auto",
        help="the allocator of the bench's embedded Valkey: the bundled build uses the C "
        "library's malloc, production builds jemalloc; jemalloc preloads libjemalloc.so.2 "
        "into the server (Debian: apt install libjemalloc2), libc keeps the build's, auto "
        "(default) preloads it when installed. Reported as server_malloc; ignored with "
        "--redis-url")
    arg("--node", default="node", metavar="PATH",
        help="Node.js binary for the BullMQ peer; npm is taken from the same directory "
        "(default: node on PATH)")
    arg("--seed", type=int, default=1,
        help="seed of the arrival stream, agents' skills and handle times (default: 1)")
    arg("--record-decisions", action="store_true",
        help="configure every group with record_decisions on (docs/routing.md \"Why this "
        "agent?\"), to measure what decision records cost against a run without it; "
        "reported as record_decisions=on|off")


def _bench(args: argparse.Namespace) -> int:
    try:
        from bench.run import BenchOptions
        from bench.run import main as bench_main
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", "bench.run"):
            raise
        print("dispatchd: 'dispatchd bench' needs a source checkout of dispatchd: the "
              f"bench/ directory is not importable ({exc}). Run it from the repository "
              "(.venv/bin/dispatchd bench after ./dev test).", file=sys.stderr)
        return daemon.EXIT_FAILURE
    return bench_main(BenchOptions(quick=args.quick, scenarios=args.scenarios,
                                   redis_url=args.redis_url, node=args.node, seed=args.seed,
                                   malloc=args.server_malloc,
                                   record_decisions=args.record_decisions))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispatchd`` console script and ``python -m dispatchd``."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"dispatchd {package_version('dispatchd')}")
        return daemon.EXIT_OK
    if args.command == "demo":
        return _demo(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "simulate":
        return simulate_command.main(args)
    if args.command == "gateway-user":
        return gateway_users.main(args)
    if args.command == "dev-cluster":
        from dispatchd import devcluster

        return devcluster.run(args.dir, args.base_port)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return daemon.EXIT_SETTINGS
    daemon.configure_logging(settings)
    return daemon.run(settings)
