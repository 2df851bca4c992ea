"""The ``switchyard`` command line (``.venv/bin/switchyard``, or
``python -m switchyard``):

- ``switchyard config validate [FILE]``: the checks every service makes at
  start-up, with the same errors (file, path and line);
- ``switchyard models``: what a key may use (models, aliases, routing
  configs with versions, templates);
- ``switchyard routes``: routing configs and their versions as the routers
  publish them (NATS key-value bucket), or as a file defines them;
- ``switchyard usage --by model --since 1h``: the analytics summary;
- ``switchyard keys create|list|show|revoke|rotate``: managed API keys
  through the admin API (``/v1/admin/keys``, an admin key);
- ``switchyard cache purge --tenant NAME | --all``: remove cached answers
  (``/v1/admin/cache/purge``, an admin key).

Subcommands are small functions registered in ``main``. ``models`` and
``usage`` call the edge with an API key (``SWITCHYARD_API_KEY``) at
``SWITCHYARD_BASE_URL`` (default ``http://127.0.0.1:8080/v1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from switchyard.config import ConfigError, load_config

COLUMNS = (("requests", "requests", "{:,}"), ("errors", "errors", "{:,}"), ("tokens in", "prompt_tokens", "{:,}"),
           ("tokens out", "completion_tokens", "{:,}"), ("cost $", "cost_usd", "{:.6f}"),
           ("p50 ms", "latency_p50_ms", "{:.0f}"), ("p95 ms", "latency_p95_ms", "{:.0f}"),
           ("ttft p50 ms", "ttft_p50_ms", "{:.0f}"), ("cache hit", "cache_hit_rate", "{:.0%}"))


def get_json(command: str, base_url: str, key: str, path: str, params: list[tuple[str, str]] | None = None,
             timeout_s: float = 30, method: str = "GET", body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One JSON call to ``base_url + path`` with the key; SystemExit naming
    ``command`` with the answer's message on failure."""
    url = f"{base_url.rstrip('/')}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
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
        raise SystemExit(f"switchyard {command}: cannot reach {base_url}: {exc}") from None


def fetch_summary(base_url: str, key: str, params: list[tuple[str, str]], timeout_s: float = 30) -> dict[str, Any]:
    return get_json("usage", base_url, key, "/analytics/summary", params, timeout_s)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


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


# ------------------------------------------------------------------- config --


def config_validate(args: argparse.Namespace) -> int:
    path = args.file or os.environ.get("SWITCHYARD_CONFIG") or ""
    if not path:
        raise SystemExit("switchyard config validate: name a FILE (or set SWITCHYARD_CONFIG)")
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    counts = [(len(config.providers), "provider"), (sum(len(p.models) for p in config.providers.values()), "model"),
              (len(config.aliases), "alias"), (len(config.routes), "routing config"),
              (len(config.templates), "template"), (len(config.api_keys), "API key")]
    print(f"{path}: valid (" + ", ".join(f"{n} {name}{'' if n == 1 else 'es' if name == 'alias' else 's'}"
                                         for n, name in counts) + ")")
    return 0


def _add_config(commands: Any) -> None:
    config = commands.add_parser("config", help="check a config file").add_subparsers(dest="action", required=True)
    validate = config.add_parser("validate", help="the start-up checks, with their errors (file, path, line)")
    validate.add_argument("file", nargs="?", default="", help="the YAML file (default $SWITCHYARD_CONFIG)")
    validate.set_defaults(run=config_validate)


# ------------------------------------------------------------------- models --


def models(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get("SWITCHYARD_API_KEY")
    if not key:
        raise SystemExit("switchyard models: set SWITCHYARD_API_KEY (or pass --key)")
    body = get_json("models", args.base_url, key, "/models")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    rows = []
    for m in body["data"]:
        kind = m.get("kind", "model")
        detail = {"route": f"v{m.get('version')} {m.get('strategy', '')}", "alias": f"-> {m.get('model', '')}",
                  "template": f"model {m.get('model') or '(request or key default)'}"}.get(kind, "")
        rows.append([m["id"], kind, m["owned_by"], detail])
    print(table(["id", "kind", "owned by", ""], rows))
    return 0


def _add_models(commands: Any) -> None:
    parser = commands.add_parser("models", help="models, aliases, routing configs and templates a key may use")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    _add_connection(parser)
    parser.set_defaults(run=models)


# ------------------------------------------------------------------- routes --

ROUTES_BUCKET, ROUTES_KEY = "SWITCHYARD_ROUTES", "config"  # written by the router (router/config_watch.py)


async def _published(nats_url: str, timeout_s: float) -> tuple[dict[str, Any], int] | None:
    """The routers' published document (router/versions.py) and its revision; None if there is none."""
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError

    from switchyard import nats_client  # only this command needs NATS

    async def quiet(_: Exception) -> None:  # the failure is reported once, by the caller
        return None

    nc = await asyncio.wait_for(nats_client.connect(nats_url, connect_timeout=timeout_s, allow_reconnect=False,
                                             error_cb=quiet), timeout_s)
    try:
        kv = await nc.jetstream(timeout=timeout_s).key_value(ROUTES_BUCKET)
        entry = await kv.get(ROUTES_KEY)
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    finally:
        await nats_client.close(nc)
    return json.loads(entry.value or b"{}"), entry.revision or 0


def _targets(content: dict[str, Any]) -> str:
    return ", ".join(str(t.get("name") or t.get("model")) if isinstance(t, dict) else str(t)
                     for t in content.get("targets", []))


def routes(args: argparse.Namespace) -> int:
    nats_url = args.nats or os.environ.get("SWITCHYARD_NATS_URL", "")
    if nats_url:
        try:
            published = asyncio.run(_published(nats_url, args.timeout))
        except Exception as exc:  # any failure to reach NATS is reported the same way
            raise SystemExit(f"switchyard routes: cannot read {ROUTES_BUCKET} from {nats_url}: "
                             f"{type(exc).__name__} {exc}".rstrip()) from None
        if published is None:
            raise SystemExit(f"switchyard routes: nothing published in {ROUTES_BUCKET} yet (is a router running?)")
        document, revision = published
        if args.json:
            print(json.dumps({"revision": revision, "routes": document.get("routes", {})}, indent=2))
            return 0
        rows = []
        for slug, entry in sorted(document.get("routes", {}).items()):
            history = {int(v): c for v, c in entry.get("history", [])}
            current = history.get(int(entry["version"]), {})
            state = "deleted" if entry.get("deleted") else f"v{entry['version']}"
            pinnable = ", ".join(f"v{v}" for v in sorted(history))
            rows.append([f"@{slug}", state, str(current.get("strategy", "")), _targets(current), pinnable])
        print(f"published in {ROUTES_BUCKET} (revision {revision}):")
        print(table(["config", "version", "strategy", "targets", "pinnable"], rows))
        return 0
    path = args.config or os.environ.get("SWITCHYARD_CONFIG") or ""
    if not path:
        raise SystemExit("switchyard routes: pass --nats URL (or set SWITCHYARD_NATS_URL) for the published "
                         "versions, or --config FILE")
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    rows = [[f"@{slug}", spec.strategy, ", ".join(t.label for t in spec.targets), spec.description]
            for slug, spec in config.routes.items()]
    print(f"{path} (versions are numbered when a router publishes the file; pass --nats to see them):")
    print(table(["config", "strategy", "targets", "description"], rows))
    return 0


def _add_routes(commands: Any) -> None:
    parser = commands.add_parser("routes", help="routing configs and their published versions")
    parser.add_argument("--nats", default="", help="NATS URL (default $SWITCHYARD_NATS_URL)")
    parser.add_argument("--config", default="", help="without NATS: the routing configs of this file")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for NATS")
    parser.add_argument("--json", action="store_true", help="the published document's routes as JSON")
    parser.set_defaults(run=routes)


# --------------------------------------------------------------------- keys --


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
    base_url, path = args.base_url, "/admin/keys"
    if args.action == "create":
        out = get_json("keys", base_url, key, path, method="POST", body=key_settings(args))
        print(json.dumps(out, indent=2))
        print(f"\nkey (shown once, give it to the client): {out['key']}", file=sys.stderr)
    elif args.action == "list":
        out = get_json("keys", base_url, key, path)
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
        one = f"{path}/{urllib.parse.quote(args.key_id, safe='')}"
        method, one = {"show": ("GET", one), "revoke": ("DELETE", one), "rotate": ("POST", one + "/rotate")}[
            args.action]
        params = [("end_user", args.end_user)] if args.action == "show" and args.end_user else None
        print(json.dumps(get_json("keys", base_url, key, one, params, method=method), indent=2))
    return 0


def _add_keys(commands: Any) -> None:
    manage = commands.add_parser("keys", help="create, list, show, revoke and rotate managed API keys (admin key)")
    manage.add_argument("action", choices=("create", "list", "show", "revoke", "rotate"))
    manage.add_argument("key_id", nargs="?", default="", help="the key's id (show, revoke, rotate)")
    manage.add_argument("--id", default="", help="create: the new key's id (default: generated)")
    manage.add_argument("--end-user", default="", help="show: also that end user's budget spend under the key")
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
    _add_connection(manage)
    manage.set_defaults(run=keys)


# -------------------------------------------------------------------- cache --


def cache(args: argparse.Namespace) -> int:
    if bool(args.tenant) == args.all:
        raise SystemExit("switchyard cache purge: give --tenant NAME or --all")
    body = {"all": True} if args.all else {"tenant": args.tenant}
    out = get_json("cache", args.base_url, _key(args, "cache"), "/admin/cache/purge", method="POST", body=body)
    whose = "every tenant" if out["all"] else f"tenant {out['tenant']}"
    count = out["purged"]
    print(f"purged {count:,} stored value{'' if count == 1 else 's'} of cached answers ({whose})")
    return 0


def _add_cache(commands: Any) -> None:
    parser = commands.add_parser("cache", help="purge cached answers (admin key)")
    parser.add_argument("action", choices=("purge",))
    parser.add_argument("--tenant", default="", help="only this tenant's entries")
    parser.add_argument("--all", action="store_true", help="every tenant's entries")
    _add_connection(parser)
    parser.set_defaults(run=cache)


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=os.environ.get("SWITCHYARD_BASE_URL", "http://127.0.0.1:8080/v1"))
    parser.add_argument("--key", default="", help="API key (default $SWITCHYARD_API_KEY)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard from the terminal.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_config(commands)
    _add_models(commands)
    _add_routes(commands)
    _add_keys(commands)
    _add_cache(commands)
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
