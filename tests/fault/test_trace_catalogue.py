"""TRACE (RELIABILITY.md): 1,000 requests through the mesh — answered,
streamed, answered by a fallback after the first target failed, refused by
the upstream, and cancelled by the client mid-stream — each leave exactly
one complete trace: every hop's span, each attempt's spans under it, every
parent present, rooted at the client's ``traceparent``, and the failures
marked ERROR. The clients that left leave no error in the edge's log."""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh, MeshSettings, isolated_environ
from tests.e2e.conftest import running_mesh, write_test_config

PER_KIND = 200
KINDS = ("ok", "stream", "fallback", "failed", "cancelled")
EDGE, ROUTER, WORKER, UPSTREAM = ("POST /v1/chat/completions", "switchyard.v1.Router/Chat",
                                  "switchyard.v1.Provider/Generate", "POST")
PRIMARY, BACKUP = "gpt-4o-mini", "claude-sonnet-4-5"


@pytest.fixture(scope="module")
def traced_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    run_dir = tmp_path_factory.mktemp("sy-tc", numbered=True)
    settings = MeshSettings(run_dir=run_dir, public_port=0, config_path=write_test_config(run_dir, "sy_" + "t" * 40),
                            api_key="sy_" + secrets.token_hex(20), environ=isolated_environ(),
                            extra_env={"SWITCHYARD_TRACE_DIR": str(run_dir / "traces"),
                                       "SWITCHYARD_LOG_LEVEL": "WARNING"})
    with running_mesh(settings) as mesh:
        yield mesh


async def one(client: AsyncOpenAI, kind: str, i: int, traceparent: str) -> None:
    headers = {"traceparent": traceparent}
    text = f"trace {kind} {i}"
    if kind in ("ok", "failed"):
        if kind == "failed":
            text += " [[sim status=400]]"
        try:
            await client.chat.completions.create(model=PRIMARY, messages=[{"role": "user", "content": text}],
                                                 extra_headers=headers)
        except openai.BadRequestError:
            assert kind == "failed"
        return
    if kind == "fallback":
        reply = await client.chat.completions.create(
            model=PRIMARY, messages=[{"role": "user", "content": f"{text} [[sim status=503 model={PRIMARY}]]"}],
            extra_headers=headers, extra_body={"fallbacks": [f"anthropic/{BACKUP}"]})
        assert reply.model == BACKUP
        return
    directive = " [[sim tokens=60 chunk_delay_ms=5]]" if kind == "cancelled" else ""
    stream = await client.chat.completions.create(
        model=PRIMARY, messages=[{"role": "user", "content": text + directive}], stream=True, extra_headers=headers)
    seen = 0
    async for _ in stream:
        seen += 1
        if kind == "cancelled" and seen == 3:
            await stream.close()  # the client goes away mid-answer
            return
    assert kind == "stream" and seen > 1


def spans_by_trace(folder: Path) -> dict[str, list[dict]]:
    traces: dict[str, list[dict]] = collections.defaultdict(list)
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            span = json.loads(line)
            traces[span["context"]["trace_id"][2:]].append(span)
    return traces


def expected_names(kind: str) -> collections.Counter[str]:
    names = collections.Counter({EDGE: 1, ROUTER: 1, f"chat {PRIMARY}": 1, WORKER: 1, UPSTREAM: 1})
    if kind == "fallback":
        names.update({f"chat {BACKUP}": 1, WORKER: 1, UPSTREAM: 1})
    return names


def check_trace(kind: str, client_span: str, spans: list[dict]) -> None:
    names = collections.Counter(s["name"] for s in spans)
    assert names == expected_names(kind), (kind, names)
    ids = {s["context"]["span_id"]: s for s in spans}
    by_name = collections.defaultdict(list)
    for span in spans:
        by_name[span["name"]].append(span)
    (edge,), (router,) = by_name[EDGE], by_name[ROUTER]
    assert edge["parent_id"] == f"0x{client_span}"
    assert router["parent_id"] == edge["context"]["span_id"]
    attempts = [s for s in spans if s["name"].startswith("chat ")]
    assert {a["parent_id"] for a in attempts} == {router["context"]["span_id"]}
    workers = by_name[WORKER]
    assert sorted(w["parent_id"] for w in workers) == sorted(a["context"]["span_id"] for a in attempts)
    assert sorted(u["parent_id"] for u in by_name[UPSTREAM]) == sorted(w["context"]["span_id"] for w in workers)
    assert all(s["parent_id"] in ids for s in spans if s is not edge)  # no orphaned span
    status = {a["name"]: a["status"]["status_code"] for a in attempts}
    if kind == "fallback":
        assert status == {f"chat {PRIMARY}": "ERROR", f"chat {BACKUP}": "UNSET"}
    elif kind == "failed":
        assert status == {f"chat {PRIMARY}": "ERROR"}  # the attempt failed; the edge answered a 4xx as it should
        assert edge["attributes"]["http.response.status_code"] == 400 and edge["status"]["status_code"] == "UNSET"
    elif kind in ("ok", "stream"):
        assert status == {f"chat {PRIMARY}": "UNSET"}


async def test_every_request_leaves_one_complete_trace(traced_mesh: Mesh) -> None:
    plan = [(kind, i, secrets.token_hex(16), secrets.token_hex(8)) for i in range(PER_KIND) for kind in KINDS]
    gate = asyncio.Semaphore(24)
    async with AsyncOpenAI(base_url=traced_mesh.base_url, api_key=traced_mesh.api_key, max_retries=0,
                           timeout=60) as client:
        async def run(kind: str, i: int, trace_id: str, span_id: str) -> None:
            async with gate:
                await one(client, kind, i, f"00-{trace_id}-{span_id}-01")

        await asyncio.gather(*(run(*entry) for entry in plan))

    folder = traced_mesh.settings.run_dir / "traces"
    wanted = {trace_id: sum(expected_names(kind).values()) for kind, _, trace_id, _ in plan}
    async with asyncio.timeout(60):  # spans are exported in batches; cancelled ones end a little later
        while True:
            traces = await asyncio.to_thread(spans_by_trace, folder)
            if all(len(traces.get(t, ())) >= n for t, n in wanted.items()):
                break
            await asyncio.sleep(0.5)
    complete = 0
    for kind, _, trace_id, client_span in plan:
        check_trace(kind, client_span, traces[trace_id])
        complete += 1
    assert complete == len(KINDS) * PER_KIND
    # 200 clients leaving mid-stream are routine, not errors: no handler failed on a closing connection.
    assert "Error handling request" not in traced_mesh.logs()
