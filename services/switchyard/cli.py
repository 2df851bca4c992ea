"""The ``switchyard`` command line: ``switchyard usage --by model --since 1h``,
``switchyard keys create|list|show|revoke|rotate``.

Subcommands are small functions registered in ``main``; ``usage`` reads the
analytics API and ``keys`` the admin API (``/v1/admin/keys``, an admin key)
through the edge with an API key (``SWITCHYARD_API_KEY``) at
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
    return call(f"{base_url.rstrip('/')}/analytics/summary?{urllib.parse.urlencode(params)}", key, "usage",
                timeout_s=timeout_s)


def call(url: str, key: str, command: str, method: str = "GET", body: dict[str, Any] | None = None,
         timeout_s: float = 30) -> dict[str, Any]:
    """One JSON call to the edge; an error answer ends the program with its message."""
    headers = {"Authorization": f"Bearer {key}"}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise SystemExit(f"switchyard {command}: {exc.code}: {message}") from None
    except OSError as exc:
        raise SystemExit(f"switchyard {command}: cannot reach {url.split('?')[0]}: {exc}") from None


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


def _key(args: argparse.Namespace, command: str) -> str:
    key = args.key or os.environ.get("SWITCHYARD_API_KEY")
    if not key:
        raise SystemExit(f"switchyard {command}: set SWITCHYARD_API_KEY (or pass --key)")
    return key


def key_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The admin API's key body from ``keys create`` options."""
    body: dict[str, Any] = {"tenant": args.tenant}
    if args.id:
        body["id"] = args.id
    if args.allow:
        body["allowed_models"] = args.allow
    if args.default_model:
        body["default_model"] = args.default_model
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.max_concurrent:
        body["max_concurrent"] = args.max_concurrent
    if args.rpm or args.tpm:
        body["limits"] = {k: v for k, v in (("rpm", args.rpm), ("tpm", args.tpm)) if v}
    if args.user_rpm or args.user_tpm:
        body["end_user_limits"] = {k: v for k, v in (("rpm", args.user_rpm), ("tpm", args.user_tpm)) if v}
    if args.budget_usd:
        budget: dict[str, Any] = {"usd": args.budget_usd, "period": args.budget_period, "hard": args.hard}
        if args.budget_window:
            budget["window"] = args.budget_window
        body["budgets"] = [budget]
    if args.user_budget_usd:
        body.setdefault("budgets", []).append({"usd": args.user_budget_usd, "period": args.budget_period,
                                               "per": "end_user", "hard": args.hard,
                                               **({"window": args.budget_window} if args.budget_window else {})})
    metadata = {}
    for item in args.metadata:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"switchyard keys: --metadata takes name=value, got {item!r}")
        metadata[name] = value
    if metadata:
        body["metadata"] = metadata
    return body


def keys(args: argparse.Namespace) -> int:
    key = _key(args, "keys")
    base = f"{args.base_url.rstrip('/')}/admin/keys"
    if args.action == "create":
        out = call(base, key, "keys", "POST", key_settings(args))
        print(json.dumps(out, indent=2))
        print(f"\nkey (shown once, give it to the client): {out['key']}", file=sys.stderr)
    elif args.action == "list":
        out = call(base, key, "keys")
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for item in out["data"]:
                limits = item.get("limits") or {}
                budgets = ", ".join(f"${b['usd']}/{b.get('period', 'monthly')}" for b in item.get("budgets", []))
                print(f"{item['id']:<24} {item['source']:<8} {item.get('tenant', 'default'):<12} "
                      f"{item.get('role', 'client'):<7} rpm={limits.get('rpm', '-')} tpm={limits.get('tpm', '-')} "
                      f"budgets={budgets or '-'}")
    elif args.action in ("show", "revoke", "rotate"):
        if not args.key_id:
            raise SystemExit(f"switchyard keys {args.action}: give the key id")
        url = f"{base}/{urllib.parse.quote(args.key_id, safe='')}"
        method, url = {"show": ("GET", url), "revoke": ("DELETE", url), "rotate": ("POST", url + "/rotate")}[
            args.action]
        print(json.dumps(call(url, key, "keys", method), indent=2))
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
    manage = commands.add_parser("keys", help="create, list, show, revoke and rotate managed API keys (admin key)")
    manage.add_argument("action", choices=("create", "list", "show", "revoke", "rotate"))
    manage.add_argument("key_id", nargs="?", default="", help="the key's id (show, revoke, rotate)")
    manage.add_argument("--id", default="", help="create: the new key's id (default: generated)")
    manage.add_argument("--tenant", default="default")
    manage.add_argument("--allow", action="append", default=[], metavar="MODEL",
                        help="a model or @route the key may use (repeatable; default: any)")
    manage.add_argument("--default-model", default="")
    manage.add_argument("--expires-at", default="", help="ISO 8601 with a zone, e.g. 2027-01-01T00:00:00Z")
    manage.add_argument("--rpm", type=int, default=0, help="requests per minute for the key")
    manage.add_argument("--tpm", type=int, default=0, help="tokens per minute for the key")
    manage.add_argument("--user-rpm", type=int, default=0, help="requests per minute for each end user")
    manage.add_argument("--user-tpm", type=int, default=0, help="tokens per minute for each end user")
    manage.add_argument("--budget-usd", type=float, default=0, help="USD budget for the key")
    manage.add_argument("--user-budget-usd", type=float, default=0, help="USD budget for each end user")
    manage.add_argument("--budget-period", default="monthly", choices=("daily", "monthly", "rolling"))
    manage.add_argument("--budget-window", default="", help="rolling budgets: 24h, 7d, ...")
    manage.add_argument("--hard", action="store_true", help="cut live streams at the budget")
    manage.add_argument("--max-concurrent", type=int, default=0, help="requests in flight at once")
    manage.add_argument("--metadata", action="append", default=[], metavar="NAME=VALUE",
                        help="tags attached to the key's usage (repeatable)")
    manage.add_argument("--json", action="store_true", help="list: print the API's JSON answer")
    manage.add_argument("--base-url", default=os.environ.get("SWITCHYARD_BASE_URL", "http://127.0.0.1:8080/v1"))
    manage.add_argument("--key", default="", help="admin API key (default $SWITCHYARD_API_KEY)")
    manage.set_defaults(run=keys)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
