"""The ``switchyard`` command line: ``switchyard usage --by model --since 1h``.

Subcommands are small functions registered in ``main``; ``usage`` reads the
analytics API through the edge with an API key (``SWITCHYARD_API_KEY``) at
``SWITCHYARD_BASE_URL`` (default ``http://127.0.0.1:8080/v1``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

COLUMNS = (("requests", "requests", "{:,}"), ("errors", "errors", "{:,}"), ("tokens in", "prompt_tokens", "{:,}"),
           ("tokens out", "completion_tokens", "{:,}"), ("cost $", "cost_usd", "{:.6f}"),
           ("p50 ms", "latency_p50_ms", "{:.0f}"), ("p95 ms", "latency_p95_ms", "{:.0f}"),
           ("ttft p50 ms", "ttft_p50_ms", "{:.0f}"), ("cache hit", "cache_hit_rate", "{:.0%}"))


def fetch_summary(base_url: str, key: str, params: list[tuple[str, str]], timeout_s: float = 30) -> dict[str, Any]:
    url = f"{base_url.rstrip('/')}/analytics/summary?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise SystemExit(f"switchyard usage: {exc.code}: {message}") from None
    except OSError as exc:
        raise SystemExit(f"switchyard usage: cannot reach {base_url}: {exc}") from None


def render(body: dict[str, Any], by: Sequence[str]) -> str:
    """A plain text table: one line per group, then the total."""
    def cells(metrics: dict[str, Any]) -> list[str]:
        return ["-" if metrics[name] is None else form.format(metrics[name]) for _, name, form in COLUMNS]

    header = [*by, *(title for title, _, _ in COLUMNS)] if by else [title for title, _, _ in COLUMNS]
    rows = [[str(g["key"][d]) or "(none)" for d in by] + cells(g) for g in body["groups"]]
    rows.append((["total"] + [""] * (len(by) - 1) if by else []) + cells(body["totals"]))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < len(by) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                            strict=True)))
             for r in [header, *rows]]
    return "\n".join(lines)


def usage(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("SWITCHYARD_API_KEY")
    if not key:
        raise SystemExit("switchyard usage: set SWITCHYARD_API_KEY (or pass --key)")
    by = [d.strip() for d in args.by.split(",") if d.strip()] if args.by else []
    params = [("since", args.since), *([("until", args.until)] if args.until else []),
              *([("group_by", ",".join(by))] if by else []), ("limit", str(args.limit)), ("order", args.order)]
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"switchyard usage: --filter takes name=value, got {item!r}")
        params.append((name, value))
    body = fetch_summary(args.base_url, key, params)
    print(json.dumps(body, indent=2) if args.json else render(body, by))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard from the terminal.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("usage", help="requests, tokens, cost and latency from the analytics service")
    report.add_argument("--by", default="", help="group by: model, provider, key, end_user, route, arm, tag.<name>...")
    report.add_argument("--since", default="24h", help="30m, 24h, 7d, ISO 8601 or epoch ms (default 24h)")
    report.add_argument("--until", default="", help="end of the range (default now)")
    report.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                        help="only these requests, e.g. model=gpt-4o or tag.feature=chat (repeatable)")
    report.add_argument("--order", default="requests", help="requests, cost_usd, errors, ... (default requests)")
    report.add_argument("--limit", type=int, default=20)
    report.add_argument("--json", action="store_true", help="print the API's JSON answer")
    report.add_argument("--base-url", default=os.environ.get("SWITCHYARD_BASE_URL", "http://127.0.0.1:8080/v1"))
    report.add_argument("--key", default="", help="API key (default $SWITCHYARD_API_KEY)")
    report.set_defaults(run=usage)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
