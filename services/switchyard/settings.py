"""Every process's environment settings, typed, in one place.

A service reads its settings once at start-up (``load(EdgeSettings)``) and
passes the values on; nothing else reads ``os.environ``. A value that does
not parse stops the service with a message naming the variable. An empty
variable counts as unset.

The README's "Service settings" table is rendered from the classes below
(``python -m switchyard.settings`` prints it) and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from switchyard.config import ConfigError

T = TypeVar("T")


def setting(env: str, default: Any, meaning: str, *, shown: str | None = None, fallback: str | None = None,
            group: str | None = None) -> Any:
    """A field read from ``env``. ``shown``: the default as the README says
    it (when it is not the value itself); ``fallback``: another variable
    read when ``env`` is unset; ``group``: README rows with the same group
    are merged into one (their names and defaults listed together)."""
    return field(default=default, metadata={"env": env, "meaning": meaning, "shown": shown, "fallback": fallback,
                                            "group": group or env})


# ---------------------------------------------------------------- classes --

@dataclass(frozen=True)
class Common:
    """What every service reads: logging, tracing, the event loop."""

    config: str | None = setting("SWITCHYARD_CONFIG", None, "the config file; the development key that `make run` "
                                 "prints", shown="`deploy/local/switchyard.yaml`, generated", group="config")
    log_level: str = setting("SWITCHYARD_LOG_LEVEL", "INFO", "logs never contain keys or prompt bodies",
                             group="log")
    trace_dir: str | None = setting(
        "SWITCHYARD_TRACE_DIR", None, "finished spans of every hop as JSON lines in this folder (a local "
        "alternative or addition to OTLP); share of new traces sampled when `OTEL_TRACES_SAMPLER` is unset",
        group="trace")
    trace_sample: float = setting("SWITCHYARD_TRACE_SAMPLE", 1.0, "", group="trace")
    trace_content: bool = setting(
        "SWITCHYARD_TRACE_CONTENT", False, "`1`: attempt spans also carry the prompt and the answer "
        "(`gen_ai.input.messages`, `gen_ai.output.messages`); off by default, they may hold personal data",
        shown="`0`")
    otlp_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", None, "the standard OpenTelemetry variables: spans go to this OTLP/HTTP "
        "collector (`/v1/traces` is appended; the `_TRACES_` variant is used as given); the service's name "
        "(`switchyard-<service>` when unset); the sampler (`parentbased_traceidratio` and friends); the exporter's "
        "own `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, compression) and `OTEL_RESOURCE_ATTRIBUTES` "
        "apply too. No endpoint and no trace folder: tracing is off and costs nothing", group="otel")
    otlp_traces_endpoint: str | None = setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None, "", group="otel")
    service_name: str | None = setting("OTEL_SERVICE_NAME", None, "", group="otel")
    traces_sampler: str | None = setting("OTEL_TRACES_SAMPLER", None, "", group="otel")
    traces_sampler_arg: str | None = setting("OTEL_TRACES_SAMPLER_ARG", None, "", group="otel")
    traces_exporter: str | None = setting("OTEL_TRACES_EXPORTER", None, "", group="otel")
    nats_replicas: int = setting("SWITCHYARD_NATS_REPLICAS", 1, "copies of each stream and key-value bucket a "
                                 "service creates: `3` on a 3-node cluster")
    uvloop: bool = setting("SWITCHYARD_UVLOOP", True, "`0`: run on asyncio's own event loop instead of uvloop",
                           shown="`1`")


@dataclass(frozen=True)
class EdgeSettings(Common):
    address: str = setting("SWITCHYARD_EDGE_ADDRESS", "127.0.0.1:8081", "where each service listens (`host:port` "
                           "or `unix:/path`)", group="address")
    router_target: str = setting("SWITCHYARD_EDGE_ROUTER_TARGET", "127.0.0.1:50051",
                                 "the next hop (its Envoy sidecar listener)", group="target")
    analytics_target: str = setting("SWITCHYARD_EDGE_ANALYTICS_TARGET", "127.0.0.1:8090", "", group="analytics")
    metrics_address: str | None = setting(
        "SWITCHYARD_EDGE_METRICS_ADDRESS", None, "where each service serves Prometheus `/metrics` (`host:port` or "
        "`unix:/path`; unset: no metrics, no cost). A listener of its own, never the public one: operators' "
        "numbers are not for clients", shown="unset", group="metrics")
    transport: str = setting("SWITCHYARD_TRANSPORT", "session", "`session`: requests multiplexed on long-lived "
                             "gRPC streams; `call`: one gRPC call per request")
    sessions: int = setting("SWITCHYARD_EDGE_SESSIONS", 2, "session streams per process to the next hop",
                            group="sessions")
    request_timeout_s: float = setting("SWITCHYARD_EDGE_REQUEST_TIMEOUT_S", 600.0,
                                       "deadline of a request across every hop")
    sse_heartbeat_s: float = setting("SWITCHYARD_EDGE_SSE_HEARTBEAT_S", 15.0,
                                     "SSE comment sent after this much upstream silence mid-stream")
    grace_s: float = setting("SWITCHYARD_EDGE_GRACE_S", 30.0, "drain time for in-flight requests on SIGTERM; "
                             "delay before the edge stops listening", group="grace")
    drain_delay_s: float = setting("SWITCHYARD_EDGE_DRAIN_DELAY_S", 0.0, "", group="grace")
    nats_url: str | None = setting(
        "SWITCHYARD_NATS_URL", None, "usage events' NATS server, with credentials as "
        "`nats://user:password@host:4222`, or a cluster's servers separated by commas (unset: not published, "
        "not consumed; no response cache either), and "
        "the router's spool file", shown="unset", group="nats")
    spool: str = setting("SWITCHYARD_EDGE_SPOOL", "var/spool/edge.usage", "the edge's spool for the usage event "
                         "of an answer whose router died mid-answer (published after 5 s; the router's own event, "
                         "when it wrote one, wins)")
    log_level: str = setting("SWITCHYARD_EDGE_LOG_LEVEL", "INFO", "", fallback="SWITCHYARD_LOG_LEVEL", group="log")


@dataclass(frozen=True)
class RouterSettings(Common):
    address: str = setting("SWITCHYARD_ROUTER_ADDRESS", "127.0.0.1:50051", "", group="address")
    providers_target: str = setting("SWITCHYARD_ROUTER_PROVIDERS_TARGET", "127.0.0.1:50061", "", group="target")
    providers_in_process: bool = setting(
        "SWITCHYARD_ROUTER_PROVIDERS_IN_PROCESS", False, "`1`: the router runs the provider worker's code itself "
        "instead of calling provider workers (an experiment measured in Performance: one process and one Envoy "
        "pass fewer per request; the router then holds the upstream keys)")
    metrics_address: str | None = setting("SWITCHYARD_ROUTER_METRICS_ADDRESS", None, "", group="metrics")
    transport: str = setting("SWITCHYARD_TRANSPORT", "session", "")
    sessions: int = setting("SWITCHYARD_ROUTER_SESSIONS", 2, "", group="sessions")
    grace_s: float = setting("SWITCHYARD_ROUTER_GRACE_S", 30.0, "", group="grace")
    nats_url: str | None = setting("SWITCHYARD_NATS_URL", None, "", group="nats")
    spool: str = setting("SWITCHYARD_ROUTER_SPOOL", "var/spool/router.usage", "", group="nats")
    config_poll_s: float = setting("SWITCHYARD_ROUTER_CONFIG_POLL_S", 1.0, "how often a router looks at the "
                                   "config file and the published routing configs")
    log_level: str = setting("SWITCHYARD_ROUTER_LOG_LEVEL", "INFO", "", fallback="SWITCHYARD_LOG_LEVEL",
                             group="log")


@dataclass(frozen=True)
class ProvidersSettings(Common):
    address: str = setting("SWITCHYARD_PROVIDERS_ADDRESS", "127.0.0.1:50061", "", group="address")
    metrics_address: str | None = setting("SWITCHYARD_PROVIDERS_METRICS_ADDRESS", None, "", group="metrics")
    grace_s: float = setting("SWITCHYARD_PROVIDERS_GRACE_S", 30.0, "", group="grace")
    log_level: str = setting("SWITCHYARD_PROVIDERS_LOG_LEVEL", "INFO", "", fallback="SWITCHYARD_LOG_LEVEL",
                             group="log")


@dataclass(frozen=True)
class AnalyticsSettings(Common):
    address: str = setting(
        "SWITCHYARD_ANALYTICS_ADDRESS", "127.0.0.1:8090", "where the analytics service listens (internal only: it "
        "trusts the identity the edge sends; `make run` uses a Unix socket) and where the edge finds it",
        group="analytics")
    metrics_address: str | None = setting("SWITCHYARD_ANALYTICS_METRICS_ADDRESS", None, "", group="metrics")
    grace_s: float = setting("SWITCHYARD_ANALYTICS_GRACE_S", 30.0, "", group="grace")
    nats_url: str | None = setting("SWITCHYARD_NATS_URL", None, "", group="nats")
    batch: int = setting("SWITCHYARD_ANALYTICS_BATCH", 1000, "events per store transaction; JetStream redelivers "
                         "what is not acknowledged after this long", group="batch")
    ack_wait_s: float = setting("SWITCHYARD_ANALYTICS_ACK_WAIT_S", 30.0, "", group="batch")
    log_level: str = setting("SWITCHYARD_ANALYTICS_LOG_LEVEL", "INFO", "", fallback="SWITCHYARD_LOG_LEVEL",
                             group="log")


@dataclass(frozen=True)
class LauncherSettings:
    """`make run` only (deploy/local/run.py), not the services."""

    api_key: str | None = setting("SWITCHYARD_API_KEY", None, "", shown="", group="config")
    port: int = setting("SWITCHYARD_PORT", 8080, "`make run` only: the public port; Envoy's worker threads",
                        group="launcher")
    envoy_concurrency: int = setting("SWITCHYARD_ENVOY_CONCURRENCY", 1, "", group="launcher")
    metrics_port: int = setting(
        "SWITCHYARD_METRICS_PORT", 9460, "`make run` only: the first of the loopback ports serving metrics: "
        "Envoy's own stats (`/stats/prometheus`) on this one, then edge, analytics, router(s) and provider "
        "worker(s) (`/metrics`) on the next ones, as `make run` prints")


SERVICES: dict[str, type[Common]] = {"edge": EdgeSettings, "router": RouterSettings,
                                     "providers": ProvidersSettings, "analytics": AnalyticsSettings}

# Read by others than the services' code (the config file's ${VAR}s); listed
# in the table so that one table says what the environment can change.
EXTERNAL_ROWS = (
    ("`SWITCHYARD_<PROVIDER>_BASE_URL`, `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, "
     "`SWITCHYARD_LOCAL_API_KEY`", "the providers' own",
     "upstream base URLs and keys referenced by the shipped config; under `make run` a provider with neither "
     "its key nor its base URL set uses the simulator"),
)


# ---------------------------------------------------------------- loading --

def load(cls: type[T], env: Mapping[str, str] | None = None) -> T:
    """``cls`` filled from ``env`` (default: this process's environment)."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = spec.metadata
        raw = env.get(meta["env"]) or (env.get(meta["fallback"]) if meta["fallback"] else None)
        if raw:
            values[spec.name] = _parse(meta["env"], raw, hints[spec.name])
    return cls(**values)


def _parse(name: str, raw: str, hint: Any) -> Any:
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
    kind = kinds[0]
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return kind(raw)
    except ValueError:
        wanted = {bool: "0 or 1", int: "a whole number", float: "a number"}.get(kind, kind.__name__)
        raise ConfigError(f"{name}={raw!r}: expected {wanted}") from None


# ----------------------------------------------------------------- README --

def readme_table() -> str:
    """The README's "Service settings" table."""
    rows: dict[str, dict[str, list[str]]] = {}
    for cls in (Common, *SERVICES.values(), LauncherSettings):
        for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
            meta = spec.metadata
            row = rows.setdefault(meta["group"], {"names": [], "defaults": [], "meaning": []})
            if f"`{meta['env']}`" in row["names"]:
                continue
            row["names"].append(f"`{meta['env']}`")
            shown = meta["shown"] if meta["shown"] is not None else _shown(spec.default)
            if shown not in row["defaults"] and meta["shown"] != "":
                row["defaults"].append(shown)
            if meta["meaning"]:
                row["meaning"].append(meta["meaning"])
    lines = ["| setting | default | meaning |", "|---|---|---|"]
    external = list(EXTERNAL_ROWS)
    for row in rows.values():
        lines.append(f"| {', '.join(row['names'])} | {', '.join(row['defaults'])} | {'; '.join(row['meaning'])} |")
        if row["names"][0] == "`SWITCHYARD_CONFIG`":  # the upstream rows belong beside the config file
            lines.extend(f"| {a} | {b} | {c} |" for a, b, c in external)
            external = []
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


if __name__ == "__main__":
    sys.stdout.write(readme_table() + "\n")
