"""The ``dispatchd`` command line. Its ``--help`` text is a documented contract."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import version as package_version

from dispatchd import daemon
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
    commands.add_parser(
        "version",
        help="print the version and exit",
        description="Print dispatchd's version and exit.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dispatchd`` console script and ``python -m dispatchd``."""
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"dispatchd {package_version('dispatchd')}")
        return daemon.EXIT_OK
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return daemon.EXIT_SETTINGS
    daemon.configure_logging(settings)
    return daemon.run(settings)
