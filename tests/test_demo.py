"""``dispatchd demo`` as a real process on its own embedded Valkey, on wall-clock time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from dispatchd import demo

BIN = Path(sys.executable).parent / "dispatchd"


def clean_env() -> dict[str, str]:
    """This environment without DISPATCHD_* settings: the demo starts its own server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}


def summary_count(out: str, row: str) -> int:
    match = re.search(rf"^  {re.escape(row)}\s+(\d+)", out, re.MULTILINE)
    assert match, f"no summary row {row!r} in:\n{out}"
    return int(match.group(1))


def test_demo_help() -> None:
    proc = subprocess.run(
        [str(BIN), "demo", "--help"], env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--duration", "--seed", "--rate", "--redis-url", "--tenant", "--quiet"):
        assert option in proc.stdout


def test_demo_bad_duration_is_a_usage_error() -> None:
    proc = subprocess.run(
        [str(BIN), "demo", "--duration", "0"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--duration" in proc.stderr


def test_demo_quiet_run_shows_assignments_overflow_and_alerts() -> None:
    proc = subprocess.run(
        [str(BIN), "demo", "--duration", "12", "--seed", "1", "--quiet"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("summary after "), out  # --quiet: no event lines
    assert summary_count(out, "served") >= 3
    assert summary_count(out, "served by overflow") >= 1
    assert summary_count(out, "abandoned") >= 1
    assert summary_count(out, "alerts") >= 1
    assert "reply_sla" in out


def test_demo_stops_early_on_sigint_with_a_summary() -> None:
    proc = subprocess.Popen(
        [str(BIN), "demo", "--duration", "60"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the header: the demo is up
    # its own Valkey has a password, never printed
    assert first.startswith("dispatchd demo: tenant demo on redis://default:***@127.0.0.1:"), first
    seen = [first]
    while " assigned " not in seen[-1]:  # wait for the first assignment, then interrupt
        line = proc.stdout.readline()
        assert line, "demo ended before assigning anyone"
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    out = "".join(seen) + out
    assert proc.returncode == 0, err
    assert " assigned " in out
    assert "summary after " in out
    assert summary_count(out, "served") >= 1


def test_demo_stops_quietly_when_its_reader_goes_away() -> None:
    """`dispatchd demo | head -3`: the closed pipe ends the demo, exit 0, no traceback."""
    proc = subprocess.Popen(
        [str(BIN), "demo", "--duration", "60"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("dispatchd demo: tenant demo on")
    proc.stdout.close()  # like head after its lines
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_event_lines_are_readable() -> None:
    ev = {
        "type": "assigned",
        "ts": 3_500,
        "session": "s002",
        "agent": "dan",
        "group": "vip",
        "tier": 1,
        "via": "overflow",
        "wait_ms": 3_100,
        "gateway": "web",
        "cmd": None,
    }
    line = demo.format_event(ev, start_ms=0)
    fields = "agent=dan group=vip tier=1 via=overflow wait=3.1s"
    assert line == f"   3.5s  assigned        s002  {fields}"
    coloured = demo.format_event(ev, start_ms=0, colour=True)
    assert coloured.startswith("\x1b[") and coloured.endswith("\x1b[0m")
