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
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class ModelSpec(_Strict):
    id: Annotated[str, Field(min_length=1)]
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


class ApiKeySpec(_Strict):
    id: Annotated[str, Field(pattern=_NAME)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    prefix: str | None = None
    key_env: str | None = None
    tenant: str = "default"
    allowed_models: list[str] | None = None
    default_model: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeySpec:
        if bool(self.sha256) == bool(self.key_env):
            raise ValueError("set exactly one of sha256 (with prefix) or key_env")
        if self.sha256 and not self.prefix:
            raise ValueError("sha256 needs the key's public prefix (its first 12 characters)")
        return self


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


class Config(_Strict):
    providers: dict[Annotated[str, Field(pattern=_NAME)], ProviderSpec]
    aliases: dict[str, str] = Field(default_factory=dict)
    api_keys: list[ApiKeySpec] = Field(default_factory=list)
    limits: Limits = Limits()

    @field_validator("providers")
    @classmethod
    def _non_empty(cls, value: dict[str, ProviderSpec]) -> dict[str, ProviderSpec]:
        if not value:
            raise ValueError("at least one provider is required")
        return value

    @model_validator(mode="after")
    def _aliases_resolve(self) -> Config:
        for alias, target in self.aliases.items():
            provider, _, model = target.partition("/")
            if not model or provider not in self.providers:
                raise ValueError(
                    f"aliases.{alias}: target {target!r} must be <provider>/<model> with a configured provider"
                )
        ids = [k.id for k in self.api_keys]
        if len(ids) != len(set(ids)):
            raise ValueError("api_keys: ids must be unique")
        return self


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


def _expand_values(node: Any) -> Any:
    """Expand env references in string values only (never in comments/keys)."""
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _expand_values(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = _expand_values(value)
    elif isinstance(node, str) and "${" in node:
        return expand_env(node)
    return node


def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid config {source}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    _expand_values(data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, data, source)) from None


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
