"""One typed settings module: parsing, fallbacks, errors that name the
variable, the README table generated from it, and no service reading the
environment behind its back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from switchyard import grpc_server, settings
from switchyard.config import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_and_types() -> None:
    edge = settings.load(settings.EdgeSettings, {})
    assert edge.address == "127.0.0.1:8081" and edge.request_timeout_s == 600.0 and edge.sessions == 2
    assert edge.metrics_address is None and edge.trace_dir is None and edge.trace_content is False
    router = settings.load(settings.RouterSettings, {"SWITCHYARD_ROUTER_SESSIONS": "5",
                                                      "SWITCHYARD_ROUTER_CONFIG_POLL_S": "0.25",
                                                      "SWITCHYARD_TRACE_CONTENT": "1", "SWITCHYARD_UVLOOP": "0"})
    assert (router.sessions, router.config_poll_s, router.trace_content, router.uvloop) == (5, 0.25, True, False)


def test_service_log_level_falls_back_to_the_common_one() -> None:
    env = {"SWITCHYARD_LOG_LEVEL": "WARNING", "SWITCHYARD_ROUTER_LOG_LEVEL": "DEBUG"}
    assert settings.load(settings.RouterSettings, env).log_level == "DEBUG"
    assert settings.load(settings.EdgeSettings, env).log_level == "WARNING"
    assert settings.load(settings.ProvidersSettings, {}).log_level == "INFO"


def test_an_empty_variable_is_unset() -> None:
    assert settings.load(settings.EdgeSettings, {"SWITCHYARD_EDGE_SESSIONS": ""}).sessions == 2


@pytest.mark.parametrize(("name", "value", "wanted"), [
    ("SWITCHYARD_EDGE_SESSIONS", "two", "a whole number"),
    ("SWITCHYARD_EDGE_REQUEST_TIMEOUT_S", "10s", "a number"),
    ("SWITCHYARD_TRACE_CONTENT", "maybe", "0 or 1"),
])
def test_a_bad_value_names_the_variable(name: str, value: str, wanted: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}='{value}': expected {wanted}$"):
        settings.load(settings.EdgeSettings, {name: value})


def test_readme_table_is_generated_from_the_module() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| setting | default | meaning |")
    table = readme[start:readme.index("\n\n", start)]
    assert table == settings.readme_table(), \
        "README's settings table is stale: PYTHONPATH=services .venv/bin/python -m switchyard.settings"


def test_every_setting_of_every_service_is_in_the_table() -> None:
    table = settings.readme_table()
    for cls in (*settings.SERVICES.values(), settings.LauncherSettings):
        for spec in cls.__dataclass_fields__.values():
            assert f"`{spec.metadata['env']}`" in table


# Reads of the environment outside the settings module, and why they stay.
ALLOWED_ENV_READS = {
    "services/switchyard/settings.py": "the settings module itself",
    "services/switchyard/config.py": "the config file's ${VAR}s and api_key_env",
    "services/edge/auth.py": "a key's key_env",
    "services/switchyard/cli.py": "the command line's defaults",
    "services/simulator/__main__.py": "the development simulator's defaults",
}


def test_no_service_reads_the_environment_inline() -> None:
    readers = set()
    for path in (ROOT / "services").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("services/switchyard/v1/"):
            continue
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            readers.add(relative)
    assert readers <= set(ALLOWED_ENV_READS), f"read settings through switchyard.settings: {readers}"


@pytest.mark.parametrize(("value", "on_uvloop"), [("0", False), ("1", True), ("", True)])
def test_uvloop_setting_chooses_the_event_loop(monkeypatch: pytest.MonkeyPatch, value: str, on_uvloop: bool) -> None:
    monkeypatch.setenv("SWITCHYARD_UVLOOP", value)
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    grpc_server.run(main)
    assert len(seen) == 1 and seen[0].startswith("uvloop") is on_uvloop
