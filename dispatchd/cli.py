"""The ``dispatchd`` command line. Its ``--help`` text is a documented contract."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import Any

from dispatchd import daemon, demo
from dispatchd.keys import ID_RE
from dispatchd.settings import CONFIG_VAR, Settings, SettingsError, defaults, env_var, field_docs

DESCRIPTION = (
    "Redis-centric dispatch daemon for customer service: routes waiting customers to "
    "agents by skill group, priority, overflow and sticky rules, keeping all routing "
    "state in Redis (or Valkey)."
)

RUN_DESCRIPTION = (
    "Start the daemon. Without DISPATCHD_REDIS_URL it starts its own Valkey on loopback "
    "with data in DISPATCHD_DATA_DIR; with it, it connects to that server. It checks the "
    "server version (Redis >= 7.0 or Valkey >= 7.2), loads every routing script onto the "
    'server (a broken script stops it here), logs "ready", then waits for SIGTERM or '
    "SIGINT and stops cleanly, stopping the embedded Valkey too. This build does not yet "
    "consume gateway streams or serve the admin API."
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
    commands.add_parser(
        "version",
        help="print the version and exit",
        description="Print dispatchd's version and exit.",
    )
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispatchd`` console script and ``python -m dispatchd``."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"dispatchd {package_version('dispatchd')}")
        return daemon.EXIT_OK
    if args.command == "demo":
        return _demo(args)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return daemon.EXIT_SETTINGS
    daemon.configure_logging(settings)
    return daemon.run(settings)
