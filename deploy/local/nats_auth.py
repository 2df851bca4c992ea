"""NATS for the local mesh: generated credentials, one user per role, least privilege.

Passwords are generated at every start (never written anywhere but the
run directory, mode 0600) and reach each service in its SWITCHYARD_NATS_URL.
NATS subject permissions match whole tokens only (``KV_SWITCHYARD_*`` is not
a prefix pattern), so the key-value buckets a router may use are listed in
``KV_BUCKETS``: a new bucket must be added there.

- ``router``: publish usage events, create and read the usage stream (never
  purge, delete or reconfigure it: new limits could drop events just as a
  purge does), create/read/write/watch the KV buckets, size and purge the
  response cache's bucket (the admin API's cache purge) and announce cache
  writes and purges to the other routers.
- ``edge``: create/read/write/watch the managed-keys bucket, and publish the
  usage event of an answer whose router died mid-answer.
- ``analytics``: read the usage stream through its own consumers and ack;
  nothing else (it cannot publish events).
- ``admin``: everything, including purging and deleting streams (operators).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.events import STREAM, SUBJECT_PREFIX

CACHE_BUCKET = "SWITCHYARD_CACHE"  # the response cache: entries may be dropped at any time by design
KV_BUCKETS = ("SWITCHYARD_ROUTES", "SWITCHYARD_LIMITS", "SWITCHYARD_BUDGETS", CACHE_BUCKET)  # the routers'
EDGE_KV_BUCKETS = ("SWITCHYARD_KEYS",)  # managed API keys: the edges watch them, the admin API writes them
CACHE_INDEX = "switchyard.cache.index"  # core NATS: routers announce cache writes to each other
CACHE_PURGED = "switchyard.cache.purged"  # ... and purges
USERS = ("router", "edge", "analytics", "admin")
API = "$JS.API"
# Never granted to a service: only the admin user may purge, delete or
# reconfigure (new limits could drop records as a purge does). The cache's
# bucket is the exception for reconfiguring and purging: a router sizes it
# and purges it on an admin's request, and dropping cached answers only
# costs a miss. Purges are denied by name (a stream not named is not
# allowed either: the allow lists name every stream a service may touch).
_KEPT = (STREAM, *(f"KV_{b}" for b in (*KV_BUCKETS, *EDGE_KV_BUCKETS) if b != CACHE_BUCKET))
DESTRUCTIVE = (f"{API}.STREAM.DELETE.>", f"{API}.STREAM.MSG.DELETE.>",
               *(f"{API}.STREAM.{verb}.{name}" for verb in ("PURGE", "UPDATE") for name in _KEPT),
               f"{API}.CONSUMER.DELETE.{STREAM}.>")


def inbox(user: str) -> str:
    """The replies a user may receive (``switchyard.nats_client`` sets this prefix)."""
    return f"_INBOX.{user}.>"


def _kv_publish(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"{API}.STREAM.CREATE.{stream}", f"{API}.STREAM.INFO.{stream}",
        f"$KV.{bucket}.>",  # put, delete and purge of a key are publishes
        f"{API}.DIRECT.GET.{stream}", f"{API}.DIRECT.GET.{stream}.>", f"{API}.STREAM.MSG.GET.{stream}",
        # watch / keys / history: an ordered push consumer, its flow control and clean-up
        f"{API}.CONSUMER.CREATE.{stream}", f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.INFO.{stream}.*", f"{API}.CONSUMER.DELETE.{stream}.*", f"$JS.FC.{stream}.>",
    ]


def permissions(user: str) -> dict[str, Any] | None:
    """The user's NATS permissions (None: unrestricted)."""
    if user == "admin":
        return None
    subscribe = [inbox(user)]
    if user == "router":
        publish = [f"{SUBJECT_PREFIX}.>", f"{API}.STREAM.CREATE.{STREAM}", f"{API}.STREAM.INFO.{STREAM}",
                   f"{API}.STREAM.UPDATE.KV_{CACHE_BUCKET}", f"{API}.STREAM.PURGE.KV_{CACHE_BUCKET}", CACHE_INDEX,
                   CACHE_PURGED]
        for bucket in KV_BUCKETS:
            publish += _kv_publish(bucket)
        subscribe += [CACHE_INDEX, CACHE_PURGED]
    elif user == "edge":  # managed keys; and the usage of answers whose router died mid-answer
        publish = [f"{SUBJECT_PREFIX}.>", f"{API}.STREAM.CREATE.{STREAM}", f"{API}.STREAM.INFO.{STREAM}"]
        publish += [p for bucket in EDGE_KV_BUCKETS for p in _kv_publish(bucket)]
    elif user == "analytics":
        publish = [f"{API}.STREAM.INFO.{STREAM}", f"{API}.STREAM.NAMES",
                   f"{API}.CONSUMER.CREATE.{STREAM}", f"{API}.CONSUMER.CREATE.{STREAM}.>",
                   f"{API}.CONSUMER.DURABLE.CREATE.{STREAM}.*", f"{API}.CONSUMER.INFO.{STREAM}.*",
                   f"{API}.CONSUMER.MSG.NEXT.{STREAM}.*", f"$JS.ACK.{STREAM}.>", f"$JS.FC.{STREAM}.>"]
    else:
        raise ValueError(f"unknown NATS user {user!r}")
    return {"publish": {"allow": publish, "deny": list(DESTRUCTIVE)}, "subscribe": {"allow": subscribe}}


def generate_passwords() -> dict[str, str]:
    return {user: secrets.token_urlsafe(24) for user in USERS}


def user_url(port: int | list[int], user: str, password: str) -> str:
    """The user's URL, or a comma-separated list of them for a cluster's nodes."""
    ports = [port] if isinstance(port, int) else port
    return ",".join(f"nats://{user}:{password}@127.0.0.1:{p}" for p in ports)


@dataclass(frozen=True)
class ClusterNode:
    """One node of a local NATS cluster: its name, its cluster (route) port,
    the other nodes' route ports, the routes' own credentials, and an HTTP
    monitoring port on 127.0.0.1 (its ``/healthz`` says when JetStream is
    ready across the cluster)."""

    name: str
    route_port: int
    peer_route_ports: tuple[int, ...]
    route_password: str
    monitor_port: int
    cluster: str = "switchyard"


ROUTE_USER = "route"


def cluster_block(node: ClusterNode) -> dict[str, Any]:
    """The ``cluster`` section: routes to every peer, authenticated."""
    routes = [f"nats://{ROUTE_USER}:{node.route_password}@127.0.0.1:{port}" for port in node.peer_route_ports]
    return {"name": node.cluster, "listen": f"127.0.0.1:{node.route_port}", "routes": routes,
            "authorization": {"user": ROUTE_USER, "password": node.route_password}}


def write_server_config(path: Path, *, port: int, store_dir: Path, passwords: dict[str, str],
                        node: ClusterNode | None = None) -> None:
    """A nats-server config (JSON is valid NATS config), readable by this Unix user only.
    With ``node``: one member of a JetStream cluster (replicated streams need a quorum of them)."""
    users = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        granted = permissions(user)
        if granted is not None:
            entry["permissions"] = granted
        users.append(entry)
    config: dict[str, Any] = {"listen": f"127.0.0.1:{port}", "jetstream": {"store_dir": str(store_dir)},
                              "authorization": {"users": users}}
    if node is not None:
        config.update(server_name=node.name, cluster=cluster_block(node), http=f"127.0.0.1:{node.monitor_port}")
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(config, indent=2))
