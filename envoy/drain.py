"""Drain an Envoy before it stops (a Kubernetes preStop hook of the front proxy).

Envoy exits at once on SIGTERM, cutting open streams. This asks its admin
API to drain the listeners gracefully (HTTP/1.1 answers get ``Connection:
close``, HTTP/2 connections a GOAWAY, no new connections are accepted), then
waits until no request is active or ``--timeout`` passes::

    python envoy/drain.py --admin http://127.0.0.1:9901 --timeout 110
"""

import argparse
import json
import sys
import time
import urllib.request


def active_requests(admin: str) -> int:
    with urllib.request.urlopen(f"{admin}/stats?format=json&filter=downstream_rq_active$", timeout=5) as reply:
        stats = json.load(reply).get("stats", [])
    return sum(int(stat.get("value", 0)) for stat in stats  # not the admin's own request asking
               if stat.get("name", "").startswith("http.") and not stat["name"].startswith("http.admin."))


def drain(admin: str, timeout: float, poll: float = 0.5) -> int:
    """Start the graceful drain; the requests still active when it returns."""
    request = urllib.request.Request(f"{admin}/drain_listeners?graceful", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass
    deadline = time.monotonic() + timeout
    while (active := active_requests(admin)) and time.monotonic() < deadline:
        time.sleep(poll)
    return active


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin", default="http://127.0.0.1:9901")
    parser.add_argument("--timeout", type=float, default=110.0)
    args = parser.parse_args(argv)
    left = drain(args.admin, args.timeout)
    print(f"envoy drained; {left} requests still active", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
