"""NATS for the local mesh: generated credentials, one user per role, least privilege.

Passwords are generated at every start (never written anywhere but the
run directory, mode 0600) and reach each service in its SWITCHYARD_NATS_URL.
NATS subject permissions match whole tokens only (``KV_SWITCHYARD_*`` is not
a prefix pattern), so the key-value buckets a router may use are listed in
``KV_BUCKETS``: a new bucket must be added there.

- ``router``: publish usage events, create and read the usage stream (never
  purge, delete or reconfigure it: new limits could drop events just as a
  purge does), create/read/write/watch the KV buckets, size the response
  cache's bucket and announce cache writes to the other routers.
- ``edge``: create/read/write/watch the managed-keys bucket, and publish the
  usage event of an answer whose router died mid-answer.
- ``analytics``: read the usage stream through its own consumers and ack;
  nothing else (it cannot publish events).
- ``admin``: everything, including purging and deleting streams (operators).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from switchyard.events import STREAM, SUBJECT_PREFIX

CACHE_BUCKET = "SWITCHYARD_CACHE"  # the response cache: entries may be dropped at any time by design
KV_BUCKETS = ("SWITCHYARD_ROUTES", "SWITCHYARD_LIMITS", "SWITCHYARD_BUDGETS", CACHE_BUCKET)  # the routers'
EDGE_KV_BUCKETS = ("SWITCHYARD_KEYS",)  # managed API keys: the edges watch them, the admin API writes them
CACHE_INDEX = "switchyard.cache.index"  # core NATS: routers announce cache writes to each other
USERS = ("router", "edge", "analytics", "admin")
API = "$JS.API"
# Never granted to a service: only the admin user may purge, delete or
# reconfigure (new limits could drop records as a purge does). The cache's
# bucket is the exception for reconfiguring: a router sizes it, and dropping
# cached answers only costs a miss.
_KEPT = (STREAM, *(f"KV_{b}" for b in (*KV_BUCKETS, *EDGE_KV_BUCKETS) if b != CACHE_BUCKET))
DESTRUCTIVE = (f"{API}.STREAM.PURGE.>", f"{API}.STREAM.DELETE.>", f"{API}.STREAM.MSG.DELETE.>",
               *(f"{API}.STREAM.UPDATE.{name}" for name in _KEPT), f"{API}.CONSUMER.DELETE.{STREAM}.>")


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
                   f"{API}.STREAM.UPDATE.KV_{CACHE_BUCKET}", CACHE_INDEX]
        for bucket in KV_BUCKETS:
            publish += _kv_publish(bucket)
        subscribe.append(CACHE_INDEX)
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


def user_url(port: int, user: str, password: str) -> str:
    return f"nats://{user}:{password}@127.0.0.1:{port}"


def write_server_config(path: Path, *, port: int, store_dir: Path, passwords: dict[str, str]) -> None:
    """A nats-server config (JSON is valid NATS config), readable by this Unix user only."""
    users = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        granted = permissions(user)
        if granted is not None:
            entry["permissions"] = granted
        users.append(entry)
    config = {"listen": f"127.0.0.1:{port}", "jetstream": {"store_dir": str(store_dir)},
              "authorization": {"users": users}}
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(config, indent=2))
