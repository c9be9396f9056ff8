"""``dispatchd gateway-user``: Redis ACL users for gateways, one tenant each.

A gateway user may append commands to its tenant's inbound stream and read the tenant's
outbound stream, and nothing else: no other key (no tokens, no routing state, no other
tenant), no script, no administrative command. Its password is random and shown once.
On the embedded Valkey the users are kept in the data directory's ACL file (``ACL
SAVE``), so they survive restarts; on an external server ``ACL SAVE`` is tried and, when
the server has no ACL file, the operator is told to persist the user himself.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from dispatchd import datadir, keys
from dispatchd.connect import ClusterURL, is_cluster_url
from dispatchd.embedded import EmbeddedServerError, EmbeddedValkey
from dispatchd.settings import Settings, SettingsError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: What a gateway may run besides its stream commands: authenticate, say hello, ping,
#: and name its connection (redis-py sends CLIENT SETINFO when it connects).
CONNECTION_COMMANDS = ("ping", "hello", "auth", "client|setinfo", "client|setname")
#: XADD on the inbound stream; XREAD, XRANGE, XREVRANGE and XLEN on the outbound one
#: (XLEN also tells the length of the inbound stream).
STREAM_COMMANDS = ("xadd", "xread", "xrange", "xrevrange", "xlen")
#: On a cluster also what a cluster client needs to find the slots' masters (redis-py:
#: CLUSTER SLOTS, CLUSTER SHARDS, and COMMAND for the keys of each command).
CLUSTER_COMMANDS = ("cluster|slots", "cluster|shards", "command")

DESCRIPTION = (
    "Manage the Redis ACL users of gateways: one user per gateway, limited to one "
    "tenant's streams. Such a user can XADD to {T}:in and XREAD, XRANGE, XREVRANGE and "
    "XLEN {T}:out (XLEN also {T}:in), and PING, AUTH, HELLO and CLIENT SETNAME/SETINFO; "
    "nothing else: no other key, no other tenant, no script (FCALL, EVAL), no "
    "administrative command. Works on DISPATCHD_REDIS_URL (or --redis-url; its user needs "
    "the right to run ACL), else on the embedded Valkey of DISPATCHD_DATA_DIR: the running "
    "daemon's server, or, when no daemon runs, the server started for the command and "
    "stopped again. On the embedded Valkey users are saved in the data directory's ACL "
    "file (users.acl) and survive restarts; on an external server the command runs ACL "
    "SAVE, and if the server has no ACL file it says so on stderr: the user then lasts "
    "until the server restarts unless you persist it (CONFIG REWRITE when users live in "
    "the config file, or configure an aclfile). On a cluster URL (redis+cluster://) the "
    "user is made, removed and saved on every node that is not failed, masters and "
    "replicas (ACL users are per node), and may also run CLUSTER SLOTS, CLUSTER SHARDS "
    "and COMMAND, which a cluster client needs to find the masters; a node added later "
    "needs the user too (run add again after removing it, or copy the ACL file)."
)
EXIT_STATUS = (
    "exit status: 0 done, 1 the server could not be reached or started, the user exists "
    "already (add) or is not a gateway user (remove), 2 bad command line or settings"
)

_GATEWAY_KEYS = re.compile(r"%W~\{([A-Za-z0-9_.@-]{1,64})\}:in %R~\{\1\}:out")


class GatewayUserError(Exception):
    """The request cannot be done (a user that exists, or is not a gateway user)."""


def acl_rules(tenant: str, password: str, *, cluster: bool = False) -> list[str]:
    """The ``ACL SETUSER`` rules of a gateway user of ``tenant`` (on a cluster node)."""
    commands = (*CONNECTION_COMMANDS, *STREAM_COMMANDS, *(CLUSTER_COMMANDS if cluster else ()))
    return [
        "reset", "on", f">{password}", "resetchannels", "-@all",
        *(f"+{c}" for c in commands),
        f"%W~{keys.key('inbound', tenant)}", f"%R~{keys.key('outbound', tenant)}",
    ]


class Nodes:
    """Where the users live: one server, or every node of a cluster (ACL users are per
    node in Redis Cluster: a gateway may connect to any of them)."""

    def __init__(self, url: str) -> None:
        self.cluster = is_cluster_url(url)
        if not self.cluster:
            self.clients = [redis.Redis.from_url(url, socket_connect_timeout=10)]
            return
        spec = ClusterURL(url)
        opts: dict[str, Any] = {"username": spec.username, "password": spec.password,
                                "ssl": spec.tls,
                "socket_connect_timeout": 10}
        self.clients = []
        try:
            for host, port in self._node_addresses(spec, opts):
                self.clients.append(redis.Redis(host=host, port=port, **opts))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _node_addresses(spec: ClusterURL, opts: dict[str, Any]) -> list[tuple[str, int]]:
        """Every node that is not failed, from ``CLUSTER NODES`` of the first seed that
        answers."""
        problem: Exception | None = None
        for host, port in spec.nodes:
            seed = redis.Redis(host=host, port=port, **opts)
            try:
                text = seed.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError) as exc:
                problem = exc
                continue
            finally:
                seed.close()
            text = text.decode() if isinstance(text, bytes) else str(text)
            found = []
            for line in text.splitlines():
                fields = line.split()
                if len(fields) < 3 or {"fail", "handshake", "noaddr"} & set(
                        fields[2].split(",")):
                    continue
                addr = fields[1].split("@")[0]
                node_host, _, node_port = addr.rpartition(":")
                found.append((node_host or host, int(node_port)))
            return found
        raise redis.ConnectionError(f"no node of the cluster answers: {problem}")

    def acl(self, *args: str) -> list[Any]:
        """``ACL *args`` on every node; the replies."""
        return [c.execute_command("ACL", *args) for c in self.clients]  # type: ignore[no-untyped-call]

    def close(self) -> None:
        for c in self.clients:
            c.close()


def _acl(client: redis.Redis | Nodes, *args: str) -> Any:
    """``ACL *args``: its reply (on a cluster, the first node's; done on every node)."""
    if isinstance(client, Nodes):
        return client.acl(*args)[0]
    return client.execute_command("ACL", *args)  # type: ignore[no-untyped-call]


def gateway_users(client: redis.Redis | Nodes) -> dict[str, str]:
    """Gateway user name -> its tenant, from ``ACL LIST``."""
    users: dict[str, str] = {}
    for line in _acl(client, "LIST"):
        text = line.decode() if isinstance(line, bytes) else str(line)
        parts = text.split(" ", 2)
        found = _GATEWAY_KEYS.search(text)
        if len(parts) == 3 and found is not None:
            users[parts[1]] = found.group(1)
    return users


def add(client: redis.Redis | Nodes, tenant: str, name: str) -> str:
    """Make gateway user ``name`` of ``tenant`` (on every node of a cluster); its password.

    Raises:
        GatewayUserError: a user of that name exists (on any node).
    """
    existing = client.acl("GETUSER", name) if isinstance(client, Nodes) else [
        _acl(client, "GETUSER", name)]
    if any(e is not None for e in existing):
        raise GatewayUserError(f"user {name!r} exists already (remove it first to replace it)")
    password = datadir.new_password()
    cluster = isinstance(client, Nodes) and client.cluster
    _acl(client, "SETUSER", name, *acl_rules(tenant, password, cluster=cluster))
    return password


def remove(client: redis.Redis | Nodes, name: str, tenant: str | None) -> None:
    """Delete gateway user ``name`` (of ``tenant``, if given); its connections are closed.

    Raises:
        GatewayUserError: no gateway user of that name (and tenant).
    """
    owner = gateway_users(client).get(name)
    if owner is None or (tenant is not None and owner != tenant):
        where = "" if tenant is None else f" of tenant {tenant!r}"
        raise GatewayUserError(f"no gateway user {name!r}{where}")
    _acl(client, "DELUSER", name)


def save(client: redis.Redis | Nodes) -> str | None:
    """``ACL SAVE`` (on every node of a cluster); None, or why the users could not be
    saved."""
    problems = []
    for c in client.clients if isinstance(client, Nodes) else [client]:
        try:
            c.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            problems.append(str(exc))
    return "; ".join(dict.fromkeys(problems)) or None


@contextlib.contextmanager
def _server(url: str | None, data_dir: str) -> Iterator[str]:
    """The URL to manage users on: ``url``, the running embedded server of ``data_dir``,
    or one started there for the duration."""
    if url is not None:
        yield url
        return
    server = EmbeddedValkey(data_dir)
    try:
        server.start()
    except EmbeddedServerError as exc:
        port = datadir.configured_port(server.data_dir)
        if "in use by another" not in str(exc) or port is None:
            raise
        # the daemon runs: its server, with the password of the data directory
        yield f"redis://default:{datadir.password(server.data_dir)}@127.0.0.1:{port}"
        return
    try:
        yield server.url
    finally:
        server.stop()


def gateway_url(server_url: str, name: str, password: str) -> str:
    """``server_url`` with the gateway user's credentials instead of its own."""
    parts = urlsplit(server_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{name}:{password}@{host}"))


def add_parser(commands: Any) -> None:
    """The ``gateway-user`` subcommand and its ``add``, ``remove`` and ``list``."""
    from dispatchd.cli import _tenant_id, _wrap  # the CLI's own helpers

    parser = commands.add_parser(
        "gateway-user", help="add, remove or list the Redis users of gateways",
        description=_wrap(DESCRIPTION), epilog=_wrap(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", metavar="URL",
                        help="manage users on this server (default: DISPATCHD_REDIS_URL if "
                        "set, else the embedded Valkey of DISPATCHD_DATA_DIR)")
    actions = parser.add_subparsers(title="actions", dest="action", metavar="ACTION",
                                    required=True)
    add_p = actions.add_parser(
        "add", help="make a gateway user; prints its password once",
        description=_wrap(
            "Make the gateway user NAME of tenant T with a random password and print, on "
            "stdout, the lines 'user: NAME', 'tenant: T', 'password: ...' and 'url: ...' "
            "(the server's URL with these credentials). The password is not shown again."))
    remove_p = actions.add_parser(
        "remove", help="delete a gateway user and close its connections",
        description=_wrap("Delete the gateway user NAME (of tenant T, if --tenant is "
                          "given); its open connections are closed."))
    list_p = actions.add_parser(
        "list", help="list the gateway users",
        description=_wrap("Print one line per gateway user: its name and tenant, "
                          "separated by a tab, sorted by name (only those of tenant T "
                          "with --tenant)."))
    add_p.add_argument("--tenant", type=_tenant_id, required=True, metavar="T",
                       help="the tenant whose streams the user may use")
    for p in (remove_p, list_p):
        p.add_argument("--tenant", type=_tenant_id, metavar="T", help="only this tenant's user")
    for p in (add_p, remove_p):
        p.add_argument("name", type=_user_name, metavar="NAME",
                       help="user name (A-Z a-z 0-9 _ . @ -, 1-64)")


def _user_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", text) or text == "default":
        raise argparse.ArgumentTypeError(
            f"not a user name (A-Z a-z 0-9 _ . @ -, 1-64, not 'default'): {text!r}")
    return text


def main(args: argparse.Namespace) -> int:
    """Run ``dispatchd gateway-user``; the exit status."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _server(args.redis_url or settings.redis_url, settings.data_dir) as url:
            nodes = Nodes(url)
            try:
                return _act(args, nodes, url, external=(args.redis_url or settings.redis_url)
                            is not None)
            finally:
                nodes.close()
    except (GatewayUserError, EmbeddedServerError, redis.RedisError, OSError) as exc:
        print(f"dispatchd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _act(args: argparse.Namespace, client: Nodes, url: str, *, external: bool) -> int:
    if args.action == "list":
        for name, tenant in sorted(gateway_users(client).items()):
            if args.tenant in (None, tenant):
                print(f"{name}\t{tenant}")
        return EXIT_OK
    if args.action == "add":
        password = add(client, args.tenant, args.name)
    else:
        remove(client, args.name, args.tenant)
    problem = save(client)
    if problem is not None:
        if not external:
            raise GatewayUserError(f"ACL SAVE failed: {problem}")
        print(f"dispatchd: warning: ACL SAVE failed ({problem}): the change lasts until "
              "the server restarts unless you persist it (CONFIG REWRITE, or an aclfile)",
              file=sys.stderr)
    if args.action == "add":
        print(f"user: {args.name}\ntenant: {args.tenant}\npassword: {password}\n"
              f"url: {gateway_url(url, args.name, password)}", flush=True)
    return EXIT_OK
