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


#: Keys the quick multitenant run must report: numbers > 0 ...
MT_NUMBERS = (
    "mt_tenants", "mt_agents", "mt_fixed_rate",
    *(f"mt_{side}_{k}" for side in ("single", "cluster")
      for k in ("max_cmd_per_s", "max_customers_per_s", "max_p99_ms", "redis_cpu_us_per_cmd",
                "daemon_cpu_us_per_cmd", "fixed_p99_ms", "fixed_redis_cpu_us",
                "shard_cmd_evenness")),
    "mt_cluster2_fixed_p99_ms", "mt_cluster_vs_single_redis_cpu",
)
#: ... and a/b/c figures, one per shard (3 on the cluster, 1 on the single server).
MT_PER_SHARD = {"mt_cluster_shard_cpu_share": 3, "mt_cluster_shard_redis_cpu_us": 3,
                "mt_cluster_shard_cmd": 3, "mt_cluster_shard_tenants": 3,
                "mt_cluster_shard_agents": 3, "mt_cluster_replica_tenants": 2,
                "mt_single_shard_cpu_share": 1}


def test_quick_multitenant_reports_single_and_cluster(redis_url: str) -> None:
    """--quick --scenarios multitenant: the server given, then a 3-master cluster the bench
    starts and stops; every figure reported, the tenants split over the shards and the two
    replicas, and nothing of the scenario left on the server."""
    from bench.multitenant import tenant_names

    done = bench("--quick", "--redis-url", redis_url, "--scenarios", "multitenant",
                 timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    values = result(done.stdout)
    for key in MT_NUMBERS:
        assert float(values[key]) > 0, (key, values.get(key))
    for key, n in MT_PER_SHARD.items():
        parts = values[key].split("/")
        assert len(parts) == n and all(float(p) >= 0 for p in parts), (key, values[key])
    assert values["mt_tenants"] == "30"
    assert sum(map(int, values["mt_cluster_shard_tenants"].split("/"))) == 30
    assert sum(map(int, values["mt_cluster_replica_tenants"].split("/"))) == 30
    assert values["mt_single_errors"] == values["mt_cluster_errors"] == "0"
    for key in ("mt_single_fixed_sustained", "mt_cluster_fixed_sustained",
                "mt_cluster2_fixed_sustained"):
        assert values[key] in {"yes", "no"}, (key, values[key])
    assert values["mt_cluster_server_malloc"]
    assert any(line.startswith("multitenant") for line in done.stdout.splitlines())
    client = redis.Redis.from_url(redis_url)
    try:
        for tenant in tenant_names():
            assert not list(client.scan_iter(match=keys.prefix(tenant) + "*", count=1000))
            assert not client.sismember(keys.TENANTS_KEY, tenant)
    finally:
        client.close()


def test_multitenant_is_not_in_the_default_run() -> None:
    from bench.run import DEFAULT_SCENARIOS, BenchOptions

    args = cli.build_parser().parse_args(["bench"])
    assert args.scenarios == cli.BENCH_DEFAULT_SCENARIOS == DEFAULT_SCENARIOS
    assert BenchOptions().scenarios == DEFAULT_SCENARIOS
    assert "multitenant" not in DEFAULT_SCENARIOS and "multitenant" in cli.BENCH_SCENARIOS
    assert "all but multitenant" in bench("--help", timeout=30).stdout
