"""``dispatchd bench``: run end to end against the test server; only the output's shape
is checked (every figure is machine-dependent, so there are no timing thresholds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from dispatchd import cli, keys

BIN = Path(sys.executable).parent / "dispatchd"
TENANT = "dispatchd-bench"

#: Keys the quick run of ceiling, throughput, latency, scale and durability must report;
#: all but the words are positive numbers.
EXPECTED = (
    "ceiling_per_s", "ceiling_assign_per_s", "assign_calls", "max_cmd_per_s",
    "max_customers_per_s", "max_p99_ms", "redis_cpu_us_per_cmd", "daemon_cpu_us_per_cmd",
    *(f"lat_{r}_{k}" for r in ("1k", "5k", "20k")
      for k in ("rate", "applied", "p50_ms", "p99_ms", "p999_ms", "redis_cpu_us")),
    *(f"scale_{s}_{k}" for s in ("1k", "10k")
      for k in ("cmd_per_s", "queued", "preload_per_s", "bytes_per_queued")),
    "scale_ratio_10k_1k", "aof_1k_cmd_per_s", "aof_10k_cmd_per_s", "aof_1k_vs_off",
    "aof_10k_vs_off", "ours_vs_ceiling", "ours_vs_ceiling_assign",
)
WORDS = {"mode": {"quick"}, **{f"lat_{r}_sustained": {"yes", "no"} for r in ("1k", "5k", "20k")}}


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    return subprocess.run([str(BIN), "bench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def result(stdout: str) -> dict[str, str]:
    """The ``RESULT k=v ...`` line: exactly one, the last line, ``k=v`` tokens only."""
    lines = stdout.strip().splitlines()
    assert [line for line in lines if line.startswith("RESULT ")] == lines[-1:], stdout
    pairs = [token.split("=") for token in lines[-1].split()[1:]]
    assert all(len(p) == 2 and p[0] and p[1] for p in pairs), lines[-1]
    values = dict(pairs)
    assert len(values) == len(pairs), "a key is repeated"
    return values


def test_quick_run_reports_every_figure(redis_url: str) -> None:
    sentinel = redis.Redis.from_url(redis_url)
    sentinel.set("test-bench:sentinel", "kept")
    appendonly = sentinel.config_get("appendonly")["appendonly"]
    scenarios = "ceiling,throughput,latency,scale,durability"
    done = bench("--quick", "--redis-url", redis_url, "--scenarios", scenarios)
    assert done.returncode == 0, done.stderr[-3000:]
    values = result(done.stdout)
    for key in EXPECTED:
        assert float(values[key]) > 0, (key, values.get(key))
    for key, allowed in WORDS.items():
        assert values[key] in allowed, (key, values[key])
    assert values["server"].startswith(("valkey-", "redis-"))
    assert values["errors"] == "0"
    for scenario in ("ceiling", "throughput", "latency", "scale", "durability"):
        assert any(line.startswith(scenario) for line in done.stdout.splitlines()), scenario
    assert "throughput" in done.stderr  # progress goes to stderr
    # on an external server the bench deletes its own keys and nothing else
    assert sentinel.get("test-bench:sentinel") == b"kept"
    assert not list(sentinel.scan_iter(match=keys.prefix(TENANT) + "*", count=1000))
    assert not sentinel.sismember(keys.TENANTS_KEY, TENANT)
    assert sentinel.config_get("appendonly")["appendonly"] == appendonly  # restored
    sentinel.delete("test-bench:sentinel")
    sentinel.close()


def test_missing_node_is_reported_not_faked(redis_url: str, tmp_path: Path) -> None:
    done = bench("--redis-url", redis_url, "--scenarios", "bullmq",
                 "--node", str(tmp_path / "no-node"), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    values = result(done.stdout)
    assert values["bullmq"] == "unavailable"
    assert "bullmq_customers_per_s" not in values and "ours_vs_bullmq" not in values
    assert "unavailable: node not found" in done.stdout


def test_help_names_every_scenario_and_option() -> None:
    text = bench("--help", timeout=30).stdout
    for word in (*cli.BENCH_SCENARIOS, "--quick", "--scenarios", "--redis-url", "--node",
                 "--seed", "RESULT", "exit status"):
        assert word in text, word


def test_cli_and_bench_agree_on_the_scenarios() -> None:
    from bench.run import SCENARIOS

    assert cli.BENCH_SCENARIOS == SCENARIOS


def test_unknown_scenario_is_a_usage_error() -> None:
    done = bench("--scenarios", "ceiling,nope", timeout=30)
    assert done.returncode == 2
    assert "nope" in done.stderr


def test_without_the_bench_directory_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bench", None)  # as in an installed wheel
    assert cli.main(["bench", "--scenarios", "ceiling", "--redis-url", "redis://0.0.0.0:1"]) == 1
    assert "needs a source checkout" in capsys.readouterr().err


def test_unreachable_server_exits_1() -> None:
    done = bench("--redis-url", "redis://127.0.0.1:1", "--scenarios", "ceiling", timeout=60)
    assert done.returncode == 1
    assert "bench: ConnectionError" in done.stderr
    assert "RESULT" not in done.stdout


@pytest.mark.parametrize("malloc", ["libc", "jemalloc"])
async def test_bench_server_allocator(tmp_path: Path, malloc: str) -> None:
    """--server-malloc: libc keeps the bundled build's allocator; jemalloc preloads it into
    the server (seen in the process's mappings), or refuses clearly when not installed."""
    from bench.servers import BenchError, Server, find_jemalloc, server_malloc

    if malloc == "jemalloc" and find_jemalloc() is None:
        with pytest.raises(BenchError, match="libjemalloc2"):
            Server.start_embedded(tmp_path / "v", append_only=False, malloc=malloc)
        return
    server = Server.start_embedded(tmp_path / "v", append_only=False, malloc=malloc)
    client = server.client()
    try:
        built = (await client.info("memory"))["mem_allocator"]
        expect = built if malloc == "libc" or "jemalloc" in built else "jemalloc-preloaded"
        assert await server_malloc(client) == expect
        assert "LD_PRELOAD" not in os.environ or os.environ["LD_PRELOAD"] != find_jemalloc()
    finally:
        await client.aclose()
        server.stop()
