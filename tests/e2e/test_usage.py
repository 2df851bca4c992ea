"""One usage event per client request reaches NATS JetStream, keyed by the
request id, with tokens, cost and routing context."""

from __future__ import annotations

import asyncio

import nats.js.errors
import openai
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from openai import AsyncOpenAI

from deploy.local.mesh import Mesh
from switchyard import nats_client
from switchyard.events import STREAM
from switchyard.v1 import usage_pb2 as upb


async def usage_events(mesh: Mesh, request_ids: set[str], wait_s: float = 15) -> list[upb.UsageEvent]:
    """All stored usage events for these request ids, once each id has one.

    One consumer reads the stream from its start to its end, however long it
    is (nothing to acknowledge, so no cap on messages in flight), then waits
    for what is still to come."""
    nc = await nats_client.connect(mesh.nats_url_for("analytics"))
    try:
        js = nc.jetstream()
        found: list[upb.UsageEvent] = []
        sub = None
        async with asyncio.timeout(wait_s):
            while sub is None:
                try:
                    sub = await js.pull_subscribe("switchyard.usage.>", durable=None, stream=STREAM,
                                                  config=ConsumerConfig(ack_policy=AckPolicy.NONE))
                except nats.js.errors.NotFoundError:  # no event published yet: no stream
                    await asyncio.sleep(0.1)
            while {e.request_id for e in found} != request_ids:
                try:
                    messages = await sub.fetch(1000, timeout=0.5)
                except TimeoutError:
                    continue  # read to the end; more may come
                found += [e for e in (upb.UsageEvent.FromString(m.data) for m in messages)
                          if e.request_id in request_ids]
        return found
    finally:
        await nc.close()


async def test_usage_event_per_request(client: AsyncOpenAI, mesh: Mesh) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": "meter me"}],
        extra_body={"mlx:tags": {"feature": "e2e"}, "mlx:end_user": "user-7", "session_id": "s-1"})
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    (event,) = await usage_events(mesh, {request_id})
    assert event.status == "ok" and event.http_status == 200
    assert (event.provider, event.model, event.model_requested) == ("openai", "gpt-4o-mini", "fast")
    assert event.key_id == "dev" and event.tenant == "default"
    assert event.usage.prompt_tokens == completion.usage.prompt_tokens
    assert event.usage.completion_tokens == completion.usage.completion_tokens
    assert event.usage.cost_usd == pytest.approx(float(raw.headers["x-switchyard-cost-usd"]), abs=1e-6)
    assert event.usage.cost_usd > 0
    assert dict(event.tags) == {"feature": "e2e"}
    assert (event.end_user, event.session_id) == ("user-7", "s-1")
    assert event.latency_ms > 0 and len(event.attempts) == 1


async def test_failed_request_is_metered_too(client: AsyncOpenAI, mesh: Mesh) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ok"}])
    ok_id = raw.headers["x-request-id"]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o-mini",
                                             messages=[{"role": "user", "content": "[[sim status=400]]"}])
    failed_id = info.value.response.headers["x-request-id"]
    events = {e.request_id: e for e in await usage_events(mesh, {ok_id, failed_id})}
    assert events[failed_id].status == "error" and events[failed_id].http_status == 400
    assert events[ok_id].status == "ok"
