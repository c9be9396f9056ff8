"""One place that turns a server URL into a redis-py asyncio client.

``redis://``, ``rediss://`` (TLS) and ``unix://`` name one server (``redis.asyncio.Redis``).
``redis+cluster://[user:password@]host:port[,host:port...]`` names a Redis/Valkey Cluster
(``rediss+cluster://`` with TLS): any reachable node will do, the client learns the slot
map from it and talks to every master (``redis.asyncio.cluster.RedisCluster``). Ports
default to 6379; a database other than 0 is refused (a cluster has only db 0).
"""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection

from dispatchd.errors import DispatchError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SINGLE_SCHEMES = ("redis", "rediss", "unix")
#: Every scheme ``DISPATCHD_REDIS_URL`` accepts.
URL_SCHEMES = SINGLE_SCHEMES + CLUSTER_SCHEMES


class BadURL(DispatchError, ValueError):
    """A server URL this module cannot use (the message says why)."""


class ClusterURL:
    """A parsed ``redis+cluster://`` URL: its seed nodes and credentials."""

    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in CLUSTER_SCHEMES:
            schemes = " or ".join(s + "://" for s in CLUSTER_SCHEMES)
            raise BadURL(f"a cluster URL starts with {schemes}")
        self.tls = scheme == "rediss+cluster"
        self.username: str | None = None
        self.password: str | None = None
        netloc, _, tail = rest.partition("/")
        if "?" in netloc or "#" in netloc or "?" in tail or "#" in tail:
            raise BadURL("a cluster URL takes no query or fragment")
        if tail not in ("", "0"):
            raise BadURL(f"a cluster has only database 0, not /{tail}")
        if "@" in netloc:
            creds, _, netloc = netloc.rpartition("@")
            user, has_pw, pw = creds.partition(":")
            self.username = unquote(user) or None
            self.password = unquote(pw) if has_pw else None
        self.nodes: list[tuple[str, int]] = []
        for part in netloc.split(","):
            host, port = _host_port(part.strip())
            self.nodes.append((host, port))

    def client(self, **opts: Any) -> RedisCluster:
        nodes = [ClusterNode(h, p) for h, p in self.nodes]
        return RedisCluster(startup_nodes=nodes, username=self.username, password=self.password,
                            ssl=self.tls, **opts)


def _host_port(part: str) -> tuple[str, int]:
    if not part:
        raise BadURL("a cluster URL names at least one host:port (an empty one is not)")
    if part.startswith("["):  # [ipv6]:port
        host, _, after = part[1:].partition("]")
        port_text = after.removeprefix(":")
    else:
        host, _, port_text = part.rpartition(":") if ":" in part else (part, "", "")
    if not host:
        raise BadURL(f"{part!r}: no host")
    try:
        port = int(port_text) if port_text else 6379
    except ValueError:
        raise BadURL(f"{part!r}: the port must be a number") from None
    if not 0 < port <= 65535:
        raise BadURL(f"{part!r}: the port must be 1-65535")
    return host, port


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def check_url(url: str) -> None:
    """Raise :class:`BadURL` saying what is wrong with ``url`` (nothing if it is usable)."""
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in URL_SCHEMES:
        raise BadURL(f"the URL must start with {', '.join(s + '://' for s in URL_SCHEMES)}")
    if scheme in CLUSTER_SCHEMES:
        ClusterURL(url)


def client_for(url: str, **opts: Any) -> Any:
    """A client for ``url``: ``redis.asyncio.Redis`` for one server, ``RedisCluster`` for a
    cluster URL (typed ``Any``: both have the command methods the callers use).

    ``opts`` are redis-py client options (``decode_responses``, ``socket_timeout``, ...)
    given to either; ``retry`` is dropped for a cluster (its client retries MOVED/ASK and
    failovers itself).
    """
    if is_cluster_url(url):
        opts.pop("retry", None)
        opts.pop("retry_on_error", None)
        return ClusterURL(url).client(**opts)
    return aioredis.Redis.from_url(url, **opts)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a cluster client (or a cluster pipeline's)."""
    return isinstance(client, RedisCluster)


def cluster_twin(client: RedisCluster, **opts: Any) -> RedisCluster:
    """Another cluster client to the nodes of ``client``, with the same credentials and
    TLS but its own connections, and ``opts`` overriding the connection options."""
    seeds = [ClusterNode(n.host, n.port) for n in client.get_nodes()] or [
        ClusterNode(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()]
    accepted = set(inspect.signature(RedisCluster.__init__).parameters) - {
        "self", "host", "port", "startup_nodes", "retry", "retry_on_error", "event_dispatcher"}
    kwargs = {k: v for k, v in client.connection_kwargs.items() if k in accepted}
    connection_class = client.connection_kwargs.get("connection_class")
    if connection_class is not None and issubclass(connection_class, SSLConnection):
        kwargs["ssl"] = True
    kwargs.update(opts)
    return RedisCluster(startup_nodes=seeds, **kwargs)


def node_client(node: ClusterNode) -> aioredis.Redis:
    """A plain client to one node of a cluster (its own pool, the node's credentials)."""
    kwargs = dict(node.connection_kwargs)
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool(
        connection_class=node.connection_class, **kwargs))


def redact(url: str) -> str:
    """``url`` without its password, fit for a log line (any scheme, cluster URLs too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        return url
    creds, _, hosts = netloc.rpartition("@")
    user, has_pw, _ = creds.partition(":")
    if not has_pw:
        return url
    shown = f"{user}:***"
    return f"{scheme}://{shown}@{hosts}{slash}{tail}"
