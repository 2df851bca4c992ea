"""The declarative configuration file: pydantic models plus a loader whose
errors name the offending path and line.

Every service reads the same file (``SWITCHYARD_CONFIG``). Secrets never live
in it: upstream keys are referenced by environment variable or file, and
client API keys are stored as SHA-256 digests (or taken from an environment
variable and hashed at load time; the plain key is not kept).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.conditions import ConditionError, compile_condition
from switchyard.templating import TemplateTextError, variables_of

KEY_PREFIX_LEN = 12
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ConfigError(Exception):
    """The config file is invalid; the message names the path and line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Per-attempt timeouts in seconds. Reasoning models need long gaps."""

    connect_s: Annotated[float, Field(gt=0)] = 5.0
    first_token_s: Annotated[float, Field(gt=0)] = 60.0
    between_chunks_s: Annotated[float, Field(gt=0)] = 60.0
    total_s: Annotated[float, Field(gt=0)] = 600.0


class Pricing(_Strict):
    """USD per million tokens."""

    input_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    output_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    cached_input_per_mtok: Annotated[float, Field(ge=0)] | None = None
    cache_write_per_mtok: Annotated[float, Field(ge=0)] | None = None
    reasoning_per_mtok: Annotated[float, Field(ge=0)] | None = None


class BreakerSettings(_Strict):
    """Circuit breaking per (provider, model), per router process."""

    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1)] = 5
    failure_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Field(ge=1)] = 20
    window_s: Annotated[float, Field(gt=0)] = 30.0
    cooldown_s: Annotated[float, Field(gt=0)] = 30.0


class RateLimitSpec(_Strict):
    """Requests and tokens (prompt + completion) per minute, in a sliding
    (GCRA) window shared by every router replica. Tokens are reserved at
    admission as an estimate (prompt + max_tokens, or the model's output
    limit) and reconciled to the actual usage at the end."""

    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    # NATS unreachable: admit (open, the default for rate limits) or refuse with 503 (closed).
    on_store_unavailable: Literal["open", "closed"] = "open"


class ModelSpec(_Strict):
    id: Annotated[str, Field(min_length=1)]
    limits: RateLimitSpec | None = None  # shared by every key, however a request reaches this model
    pricing: Pricing | None = None
    timeouts: Timeouts | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None


class ProviderSpec(_Strict):
    """One upstream API endpoint. ``models`` may list bare ids or full specs;
    an empty list means any model name is passed through (local servers)."""

    type: Literal["openai", "openai_compat", "anthropic", "gemini"]
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key_env: str | None = None
    api_key_file: str | None = None
    timeouts: Timeouts = Timeouts()
    max_connections: Annotated[int, Field(ge=1)] = 256
    breaker: BreakerSettings | None = None  # overrides the top-level breaker settings for this provider
    # Connections one API key may hold at once on this provider (per worker
    # process), so one key's flood cannot take the whole pool; unset: half of
    # max_connections. Beyond it a key's requests wait (the key holding the
    # fewest goes first), and beyond max_connections waiting get 429.
    max_connections_per_key: Annotated[int, Field(ge=1)] | None = None
    models: list[ModelSpec] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _bare_ids(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"id": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderSpec:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        return self

    def api_key(self) -> str | None:
        """The upstream key, read from the environment or a secret file."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        if self.api_key_file:
            return Path(self.api_key_file).read_text().strip() or None
        return None

    def model(self, model_id: str) -> ModelSpec | None:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        return None


_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` in seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return int(match.group(1)) * _SECONDS[match.group(2)]


class BudgetSpec(_Strict):
    """USD over a period: ``daily`` and ``monthly`` are calendar periods in
    UTC, ``rolling`` is the last ``window`` (e.g. 24h, 7d). The worst-case
    cost is reserved at admission and reconciled to the actual cost, so
    concurrent requests cannot overspend. ``hard``: a stream reserves in
    increments as it runs and is cut with ``budget_exceeded`` when the next
    increment does not fit."""

    usd: Annotated[float, Field(gt=0)]
    period: Literal["daily", "monthly", "rolling"] = "monthly"
    window: str | None = None
    per: Literal["key", "end_user"] = "key"
    hard: bool = False
    # NATS unreachable: refuse with 503 (closed, the default for budgets) or admit (open).
    on_store_unavailable: Literal["open", "closed"] = "closed"

    @model_validator(mode="after")
    def _window(self) -> BudgetSpec:
        if self.period == "rolling":
            if not self.window:
                raise ValueError("a rolling budget needs a window (e.g. 24h, 7d)")
            if not 60 <= duration_s(self.window) <= 90 * 86400:
                raise ValueError("window: between 1m and 90d")
        elif self.window:
            raise ValueError("window is only for period: rolling")
        return self

    @property
    def window_s(self) -> int:
        return duration_s(self.window) if self.window else 0


class ApiKeySpec(_Strict):
    """A client key. ``allowed_models`` lists model identifiers (raw names,
    aliases, ``provider/model``) and routing configs (``@slug``) the key may
    reach; it is checked for every target a request can reach, fallbacks and
    templates included. A listed ``@slug`` grants the targets it routes to."""

    id: Annotated[str, Field(pattern=_NAME)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    prefix: str | None = None
    key_env: str | None = None
    tenant: str = "default"
    allowed_models: list[str] | None = None
    default_model: str | None = None
    # admin: sees every tenant's analytics and manages keys (/admin/keys); client: its own tenant only.
    role: Literal["client", "admin"] = "client"
    expires_at: datetime | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=32)  # attached to the key's usage events as tags
    limits: RateLimitSpec | None = None           # the whole key
    end_user_limits: RateLimitSpec | None = None  # each end user of the key (user, mlx:end_user, X-Muxx-User-Id)
    budgets: list[BudgetSpec] = Field(default_factory=list, max_length=8)
    max_concurrent: Annotated[int, Field(ge=1)] | None = None  # requests in flight at once, across replicas

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeySpec:
        if bool(self.sha256) == bool(self.key_env):
            raise ValueError("set exactly one of sha256 (with prefix) or key_env")
        if self.sha256 and not self.prefix:
            raise ValueError("sha256 needs the key's public prefix (its first 12 characters)")
        seen = [(b.per, b.period, b.window_s) for b in self.budgets]
        if len(seen) != len(set(seen)):
            raise ValueError("budgets: at most one budget per (per, period, window)")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
        return self


class TenantSpec(_Strict):
    """Per tenant: budgets over every key of the tenant."""

    budgets: list[BudgetSpec] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _tenant_wide(self) -> TenantSpec:
        if any(b.per != "key" for b in self.budgets):
            raise ValueError("tenant budgets cover the whole tenant: leave `per` out")
        return self


class GovernanceSpec(_Strict):
    """How limits and budgets are kept across router replicas (NATS key-value)."""

    # A reservation whose router died is released after this long (live ones are renewed).
    reservation_ttl_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # Hard budgets: output tokens a stream reserves at a time.
    stream_increment_tokens: Annotated[int, Field(ge=16, le=100_000)] = 256
    # Output tokens reserved for a model whose output limit is unknown and a request without max_tokens.
    default_max_output_tokens: Annotated[int, Field(ge=1)] = 4096
    # Longest wait for NATS on an admission before the fail-open/closed policy applies.
    store_timeout_s: Annotated[float, Field(gt=0, le=10)] = 0.5


class Limits(_Strict):
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    max_json_depth: Annotated[int, Field(ge=4)] = 64
    max_messages: Annotated[int, Field(ge=1)] = 2048
    max_string_chars: Annotated[int, Field(ge=1)] = 4 * 1024 * 1024
    # Requests one edge process serves at once; beyond it, an immediate 503
    # with retry-after instead of queueing until everything is slow. A request
    # counts only once its body has been read.
    max_concurrent_requests: Annotated[int, Field(ge=1)] = 4096
    # Requests one API key, and one client address, may have open at once in
    # one edge process, counted from their headers (body read included);
    # beyond them an immediate 429 with retry-after.
    max_concurrent_requests_per_key: Annotated[int, Field(ge=1)] = 1024
    max_concurrent_requests_per_address: Annotated[int, Field(ge=1)] = 512
    # Time a client has to send its whole body once the handler starts (408
    # beyond it); Envoy's request_timeout bounds the same from its side.
    body_read_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # Bytes of an SSE stream the edge holds for a client that does not read
    # them; beyond it the stream ends with an error event.
    max_stream_buffer_bytes: Annotated[int, Field(ge=16 * 1024)] = 1024 * 1024


# ------------------------------------------------------------------ routing --

_SLUG = r"^@?[A-Za-z0-9._-]+$"


class RetryPolicy(_Strict):
    """Retries of the same target, before its first output byte: exponential
    back-off with full jitter, a ``Retry-After`` from the upstream honoured
    (up to ``max_retry_after_s``; a longer wait fails over instead), never
    past the request's deadline."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 1
    initial_backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.25
    max_backoff_s: Annotated[float, Field(ge=0, le=300)] = 4.0
    max_retry_after_s: Annotated[float, Field(ge=0, le=600)] = 10.0


class TimeoutOverrides(_Strict):
    """Per-target attempt timeouts; unset ones come from the provider/model."""

    first_token_s: Annotated[float, Field(gt=0)] | None = None
    between_chunks_s: Annotated[float, Field(gt=0)] | None = None
    total_s: Annotated[float, Field(gt=0)] | None = None


class ParamOverrides(_Strict):
    """Generation parameters a route target or template sets."""

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class RouteTarget(_Strict):
    """One target of a routing config: a model identifier (alias, raw name,
    ``provider/model``) or another config (``@slug``)."""

    model: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(pattern=_NAME, max_length=64)] | None = None  # label (experiment arm); default: model
    weight: Annotated[float, Field(gt=0)] | None = None      # weighted
    when: dict[str, Any] | None = None                        # conditional; absent = the default
    params: ParamOverrides | None = None
    timeouts: TimeoutOverrides | None = None
    retry: RetryPolicy | None = None

    @field_validator("when")
    @classmethod
    def _condition(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                compile_condition(value)
            except ConditionError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @property
    def label(self) -> str:
        return self.name or self.model


class CascadeGate(_Strict):
    """When a cascade tier's answer is accepted. JSON validity, schema
    conformance and required tool calls are checked whenever the request
    asks for them."""

    reject_finish_reasons: list[str] = Field(default_factory=lambda: ["length", "content_filter"])
    min_chars: Annotated[int, Field(ge=0)] = 0


ErrorClass = Annotated[str, Field(pattern=r"^(retryable|timeout|5xx|4xx|429|[1-5][0-9][0-9]|[a-z_]+)$")]


class RouteSpec(_Strict):
    """A named, versioned routing config (``@slug``)."""

    description: str = ""
    strategy: Literal["fallback", "weighted", "conditional", "cascade"] = "fallback"
    targets: Annotated[list[RouteTarget], Field(min_length=1)]
    # fallback / cascade: which failures before the first byte move on.
    fallback_on: list[ErrorClass] = Field(default_factory=lambda: ["retryable", "timeout", "5xx", "429"])
    # weighted: what keeps a caller on its arm (end_user, session, key, tenant, tag:<name>); unset = random.
    sticky: Annotated[str, Field(pattern=r"^(end_user|session|key|tenant|tag:.+)$")] | None = None
    gate: CascadeGate = CascadeGate()
    retry: RetryPolicy | None = None
    limits: RateLimitSpec | None = None  # shared by every key asking for this config

    @model_validator(mode="after")
    def _strategy_fields(self) -> RouteSpec:
        weights = [t.weight is not None for t in self.targets]
        if self.strategy == "weighted" and not all(weights):
            raise ValueError("weighted: every target needs a weight")
        if self.strategy != "weighted" and any(weights):
            raise ValueError(f"{self.strategy}: weight is only for the weighted strategy")
        whens = [t.when is not None for t in self.targets]
        if self.strategy == "conditional":
            if not any(whens):
                raise ValueError("conditional: at least one target needs a `when` condition")
            if False in whens and whens.index(False) != len(whens) - 1:
                raise ValueError("conditional: only the last target may omit `when` (it is the default)")
        elif any(whens):
            raise ValueError(f"{self.strategy}: `when` is only for the conditional strategy")
        if self.strategy == "cascade" and len(self.targets) < 2:
            raise ValueError("cascade: needs at least two targets")
        labels = [t.label for t in self.targets]
        if self.strategy == "weighted" and len(labels) != len(set(labels)):
            raise ValueError("weighted: arms need distinct labels; give repeated models a `name`")
        return self


class TemplateMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=1_000_000)]

    @field_validator("content")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            variables_of(value)
        except TemplateTextError as exc:
            raise ValueError(str(exc)) from None
        return value


class TemplateSpec(_Strict):
    """A stored prompt template (Mesh): messages with ``{{slot}}``
    placeholders, placed before the request's own messages."""

    id: str | None = None  # a stable UUID; derived from the name when absent
    description: str = ""
    messages: Annotated[list[TemplateMessage], Field(min_length=1)]
    model: str | None = None
    params: ParamOverrides | None = None

    @field_validator("id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return str(uuid.UUID(value))
            except ValueError:
                raise ValueError("must be a UUID") from None
        return value


class AnalyticsSpec(_Strict):
    """The analytics service's store: DuckDB embedded in the service (one
    file, no server) or a ClickHouse server for larger deployments."""

    store: Literal["duckdb", "clickhouse"] = "duckdb"
    path: Annotated[str, Field(min_length=1)] = "var/analytics.duckdb"
    clickhouse_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    clickhouse_database: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "switchyard"
    # A query running longer is stopped by the engine (its slot freed) and answered 503 query_timeout.
    query_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Requests older than this many days are deleted (hourly); unset keeps every request.
    retention_days: Annotated[int, Field(ge=1, le=36_500)] | None = None

    @model_validator(mode="after")
    def _clickhouse_needs_url(self) -> AnalyticsSpec:
        if self.store == "clickhouse" and not self.clickhouse_url:
            raise ValueError("store clickhouse needs clickhouse_url")
        return self


# -------------------------------------------------------------------- cache --

CacheMode = Literal["off", "read_write", "read_only", "write_only"]


class CachePolicy(_Strict):
    """Cache settings for one routing config, model or API key; what it leaves
    unset comes from the less specific levels (key > route > model > default)."""

    mode: CacheMode | None = None
    ttl_s: Annotated[int, Field(ge=1)] | None = None


def _without_at(value: Any) -> Any:
    """Routing-config keys as written: ``@production`` and ``production`` name the same config."""
    if isinstance(value, dict):
        return {(k[1:] if isinstance(k, str) and k.startswith("@") else k): v for k, v in value.items()}
    return value


class CacheSettings(_Strict):
    """The router's response cache (``router/cache.py``): exact match on the
    normalised request, shared by every router replica through the NATS
    key-value bucket SWITCHYARD_CACHE. Absent from the file: off."""

    mode: CacheMode = "read_write"
    ttl_s: Annotated[int, Field(ge=1)] = 3600          # lifetime of a stored answer
    max_ttl_s: Annotated[int, Field(ge=1)] = 86400     # the most a request's max-age / ttl may ask for
    # Who shares entries: everyone in a tenant, one API key, or one end user of a tenant.
    scope: Literal["tenant", "key", "end_user"] = "tenant"
    # Also cache answers sampled at temperature > 0 (or the upstream default)
    # without a seed: by default they are not reproducible, so not cached.
    sampled: bool = False
    max_entry_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024  # larger: not stored
    max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 256 * 1024 * 1024  # the bucket; oldest evicted beyond it
    lookup_timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.25  # a slower store counts as a miss
    # Per router replica: answers recently written or read, kept in memory so a repeated hit needs no NATS
    # round trip (0: none).
    local_bytes: Annotated[int, Field(ge=0)] = 64 * 1024 * 1024
    # A non-streaming request identical to one this replica is already running
    # waits (at most this long) for its answer instead of calling upstream
    # too; if that one fails or is not stored, the waiter runs itself (0: off).
    coalesce_wait_s: Annotated[float, Field(ge=0, le=600)] = 60.0
    routes: dict[Annotated[str, Field(pattern=_SLUG)], CachePolicy] = Field(default_factory=dict)
    models: dict[str, CachePolicy] = Field(default_factory=dict)   # alias, model name or provider/model
    keys: dict[str, CachePolicy] = Field(default_factory=dict)     # API key id

    @field_validator("routes", mode="before")
    @classmethod
    def _strip_at(cls, value: Any) -> Any:
        return _without_at(value)

    @model_validator(mode="after")
    def _ttls_within_max(self) -> CacheSettings:
        if self.ttl_s > self.max_ttl_s:
            raise ValueError(f"ttl_s ({self.ttl_s}) exceeds max_ttl_s ({self.max_ttl_s})")
        for level in ("routes", "models", "keys"):
            for name, policy in getattr(self, level).items():
                if policy.ttl_s is not None and policy.ttl_s > self.max_ttl_s:
                    raise ValueError(f"{level}.{name}.ttl_s ({policy.ttl_s}) exceeds max_ttl_s ({self.max_ttl_s})")
        return self


class Config(_Strict):
    providers: dict[Annotated[str, Field(pattern=_NAME)], ProviderSpec]
    aliases: dict[str, str] = Field(default_factory=dict)
    routes: dict[Annotated[str, Field(pattern=_SLUG)], RouteSpec] = Field(default_factory=dict)
    templates: dict[Annotated[str, Field(pattern=_NAME)], TemplateSpec] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerSettings = BreakerSettings()
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    limits: Limits = Limits()
    analytics: AnalyticsSpec = AnalyticsSpec()
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    governance: GovernanceSpec = GovernanceSpec()
    cache: CacheSettings = CacheSettings(mode="off")  # a `cache:` section turns it on (mode read_write)

    @field_validator("routes", mode="before")
    @classmethod
    def _strip_at(cls, value: Any) -> Any:
        return _without_at(value)

    @field_validator("providers")
    @classmethod
    def _non_empty(cls, value: dict[str, ProviderSpec]) -> dict[str, ProviderSpec]:
        if not value:
            raise ValueError("at least one provider is required")
        return value


    def model_known(self, identifier: str) -> bool:
        """Whether a model identifier (not a route) names something servable."""
        if identifier in self.aliases:
            return True
        for spec in self.providers.values():
            if spec.model(identifier) is not None:
                return True
        provider, sep, model = identifier.partition("/")
        spec = self.providers.get(provider) if sep else None
        return spec is not None and bool(model) and (not spec.models or spec.model(model) is not None)


# ------------------------------------------------------------------ loading --


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and list item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    lines = {loader.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value}
    mapping_with_lines = _LinedDict(mapping)
    mapping_with_lines.lines = lines
    return mapping_with_lines


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list[Any]:
    items = _LinedList(loader.construct_sequence(node, deep=True))
    items.lines = [n.start_mark.line + 1 for n in node.value]
    return items


class _LinedDict(dict):
    lines: dict[Any, int]


class _LinedList(list):
    lines: list[int]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, _LinedDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, _LinedList) and isinstance(part, int) and part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line


def _format_errors(exc: ValidationError, data: Any, source: str) -> str:
    out = [f"invalid config {source}:"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(data, loc)
        where = f" (line {line})" if line else ""
        msg = re.sub(r"^Value error, ", "", err["msg"])
        out.append(f"  {path}{where}: {msg}")
    return "\n".join(out)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; an unset VAR without a
    default is an error rather than a silent empty string."""
    env = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is referenced by the config but not set")

    return _ENV_REF.sub(sub, text)


def _expand_values(node: Any, root: Any, path: tuple[Any, ...], source: str) -> Any:
    """Expand env references in string values only (never in comments/keys);
    an unset variable is an error naming the value's path and line."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _expand_values(value, root, (*path, key), source)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = _expand_values(value, root, (*path, i), source)
    elif isinstance(node, str) and "${" in node:
        try:
            return expand_env(node)
        except ConfigError as exc:
            line = _line_of(root, path)
            raise ConfigError(f"invalid config {source}:\n  {'.'.join(map(str, path))}"
                              f"{f' (line {line})' if line else ''}: {exc}") from None
    return node


def _load_yaml(text: str, source: str) -> Any:
    """The YAML document, or ConfigError naming the file, line and column."""
    loader = _LineLoader(text)
    loader.name = source  # marks name the file, not "<unicode string>"
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"invalid config {source}{where}: YAML syntax: {exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid config {source}: YAML: {exc}") from None
    finally:
        loader.dispose()


def parse_config(text: str, source: str = "<string>") -> Config:
    data = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source} (line 1): the top level must be a mapping")
    _expand_values(data, data, (), source)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, source)) from None
    problems = cross_references(config)
    if problems:
        lines = [f"invalid config {source}:"]
        for loc, message in problems:
            line = _line_of(data, loc)
            lines.append(f"  {'.'.join(str(p) for p in loc)}{f' (line {line})' if line else ''}: {message}")
        raise ConfigError("\n".join(lines))
    return config


def cross_references(config: Config) -> list[tuple[tuple[Any, ...], str]]:
    """What names something that does not exist: route targets, nested
    configs (and cycles between them), template models. Each problem with
    its path in the file."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for alias, target in config.aliases.items():
        provider, _, model = target.partition("/")
        if not model or provider not in config.providers:
            problems.append((("aliases", alias),
                             f"target {target!r} must be <provider>/<model> with a configured provider"))
    seen: set[str] = set()
    for i, key in enumerate(config.api_keys):
        if key.id in seen:
            problems.append((("api_keys", i, "id"), f"id {key.id!r} is used by another key; ids must be unique"))
        seen.add(key.id)

    def check_model(identifier: str, loc: tuple[Any, ...]) -> None:
        if identifier.startswith("@"):
            slug, _, pinned = identifier[1:].partition("@")
            if slug not in config.routes:
                problems.append((loc, f"routing config {identifier!r} does not exist"))
            elif pinned:
                problems.append((loc, "a config in the file cannot pin another config's version"))
        elif not config.model_known(identifier):
            problems.append((loc, f"model {identifier!r} is not served by any provider or alias"))

    for slug, route in config.routes.items():
        for i, target in enumerate(route.targets):
            check_model(target.model, ("routes", slug, "targets", i, "model"))
    for name, template in config.templates.items():
        if template.model:
            check_model(template.model, ("templates", name, "model"))
    for slug in config.cache.routes:
        if slug not in config.routes:
            problems.append((("cache", "routes", slug), f"routing config '@{slug}' does not exist"))
    for identifier in config.cache.models:
        if not config.model_known(identifier):
            problems.append((("cache", "models", identifier), f"model {identifier!r} is not served by any "
                                                                "provider or alias"))
    key_ids = {k.id for k in config.api_keys}
    for key_id in config.cache.keys:
        if key_id not in key_ids:
            problems.append((("cache", "keys", key_id), f"API key {key_id!r} does not exist"))
    ids = [t.id for t in config.templates.values() if t.id]
    if len(ids) != len(set(ids)):
        problems.append((("templates",), "template ids must be unique"))
    if not problems:
        cycle = _route_cycle(config)
        if cycle:
            problems.append((("routes", cycle[0]), "routing configs form a cycle: "
                             + " -> ".join("@" + s for s in cycle)))
    return problems


def _route_cycle(config: Config) -> list[str] | None:
    """A cycle among nested routing configs, as the list of slugs, if any."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(slug: str, path: list[str]) -> list[str] | None:
        if state.get(slug) == 2:
            return None
        if state.get(slug) == 1:
            return [*path[path.index(slug):], slug]
        state[slug] = 1
        for target in config.routes[slug].targets:
            if target.model.startswith("@"):
                found = visit(target.model[1:], [*path, slug])
                if found:
                    return found
        state[slug] = 2
        return None

    for slug in config.routes:
        found = visit(slug, [])
        if found:
            return found
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the file at ``path`` or ``$SWITCHYARD_CONFIG``."""
    path = path or os.environ.get("SWITCHYARD_CONFIG")
    if not path:
        raise ConfigError("no config file: set SWITCHYARD_CONFIG")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(text, str(path))


# ----------------------------------------------------------------- api keys --


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:KEY_PREFIX_LEN]
