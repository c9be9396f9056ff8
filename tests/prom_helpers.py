"""Shared by the observability tests: the Prometheus binaries and the deploy/ files.

:func:`prometheus_binaries` finds ``prometheus`` and ``promtool``, installing the Debian
package ``prometheus`` with apt-get when they are missing and the tests run as root;
without root or apt the tests that need them are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dispatchd.json"
APT_TIMEOUT_S = 600


def _install() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("prometheus is not installed and apt-get cannot install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=APT_TIMEOUT_S,
                   check=False)
    done = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
        env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"apt-get install prometheus failed:\n{done.stdout[-2000:]}"
                    f"\n{done.stderr[-2000:]}")


def prometheus_binaries() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool`` (installed with apt-get if missing)."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        _install()
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert prometheus and promtool, "the prometheus package installed no binaries"
    return prometheus, promtool
