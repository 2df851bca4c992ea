"""Managed keys over a real nats-server: two edges see a created, rotated and
revoked key; the admin API refuses client keys; expired keys are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.js.errors import KeyWrongLastSequenceError

from edge.admin import KeysAdmin
from edge.auth import KeyStore
from edge.managed_keys import ManagedKeys, merge_reread
from switchyard.config import ApiKeySpec, hash_key, key_prefix
from switchyard.errors import AuthenticationError
from switchyard.v1 import router_pb2 as rpb
from tests.unit.switchyard.test_events import NatsServer

ADMIN, CLIENT = "sy_admin_" + "a" * 30, "sy_client_" + "c" * 30


def config_keys() -> list[ApiKeySpec]:
    return [ApiKeySpec(id="root", role="admin", sha256=hash_key(ADMIN), prefix=key_prefix(ADMIN)),
            ApiKeySpec(id="app", sha256=hash_key(CLIENT), prefix=key_prefix(CLIENT))]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def accepts(store: KeyStore, key: str) -> bool:
    try:
        store.authenticate(bearer(key))
    except AuthenticationError:
        return False
    return True


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServer]:
    server = NatsServer()
    await server.start()
    yield server
    server.remove()


async def edge(url: str) -> tuple[TestClient, KeyStore, ManagedKeys]:
    store = KeyStore(config_keys())
    managed = ManagedKeys(url, store.set_managed)
    await managed.start(wait_s=10)
    app = web.Application()
    KeysAdmin(store, managed, config_keys()).register(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, store, managed


async def test_a_key_created_on_one_edge_works_on_another_until_revoked(nats_server: NatsServer) -> None:
    (one, store_one, managed_one), (two, store_two, managed_two) = await edge(nats_server.url), await edge(
        nats_server.url)
    try:
        reply = await one.post("/admin/keys", headers=bearer(CLIENT), json={"id": "x"})
        assert reply.status == 403  # a client key never manages keys
        reply = await one.post("/v1/admin/keys", headers=bearer(ADMIN),
                               json={"id": "team", "tenant": "acme", "limits": {"rpm": 5}, "budgets": [{"usd": 3}]})
        body = await reply.json()
        assert reply.status == 201 and body["key"].startswith("sy_") and "sha256" not in body
        key = body["key"]
        await until(lambda: accepts(store_two, key))
        spec = store_two.authenticate(bearer(key))
        assert (spec.tenant, spec.limits.rpm, spec.budgets[0].usd) == ("acme", 5, 3)  # type: ignore[union-attr]
        assert (await one.post("/admin/keys", headers=bearer(ADMIN), json={"id": "team"})).status == 400
        bad = await one.post("/admin/keys", headers=bearer(ADMIN), json={"limits": {"rpm": -1}})
        assert bad.status == 400 and (await bad.json())["error"]["param"] == "limits.rpm"

        rotated = (await two.post("/admin/keys/team/rotate", headers=bearer(ADMIN))).status
        assert rotated == 200
        await until(lambda: not accepts(store_one, key))
        assert (await one.delete("/admin/keys/team", headers=bearer(ADMIN))).status == 200
        await until(lambda: "team" not in managed_two.keys)
        assert (await two.get("/admin/keys/team", headers=bearer(ADMIN))).status == 404
        listed = await (await two.get("/admin/keys", headers=bearer(ADMIN))).json()
        assert [k["id"] for k in listed["data"]] == ["root", "app"]
    finally:
        for client, managed in ((one, managed_one), (two, managed_two)):
            await client.close()
            await managed.close()


async def test_an_edge_that_loses_nats_keeps_its_keys(nats_server: NatsServer) -> None:
    client, store, managed = await edge(nats_server.url)
    try:
        body = await (await client.post("/admin/keys", headers=bearer(ADMIN), json={"id": "kept"})).json()
        await until(lambda: accepts(store, body["key"]))
        nats_server.stop()
        await until(lambda: not managed.ready)
        assert accepts(store, body["key"])
        assert (await client.post("/admin/keys", headers=bearer(ADMIN), json={})).status == 503
    finally:
        await client.close()
        await managed.close()


def test_an_expired_key_is_refused() -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    store = KeyStore([ApiKeySpec(id="old", sha256=hash_key(CLIENT), prefix=key_prefix(CLIENT), expires_at=past)])
    with pytest.raises(AuthenticationError, match="expired"):
        store.authenticate(bearer(CLIENT))


async def test_show_gives_the_spend_or_says_why_not() -> None:
    async def status(spec: ApiKeySpec, end_user: str) -> rpb.BudgetStatusResponse:
        assert (spec.id, end_user) == ("app", "alice")
        return rpb.BudgetStatusResponse(budgets=[
            rpb.BudgetState(scope="key", period="daily", usd=10, spent_usd=2.5, reserved_usd=1.25),
            rpb.BudgetState(scope="end_user", end_user="alice", period="daily", usd=1, spent_usd=2)])

    async def unreachable(spec: ApiKeySpec, end_user: str) -> rpb.BudgetStatusResponse:
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())

    spend = [{"scope": "key", "period": "daily", "usd": 10, "spent_usd": 2.5, "reserved_usd": 1.25,
              "remaining_usd": 6.25, "hard": False},
             {"scope": "end_user", "end_user": "alice", "period": "daily", "usd": 1, "spent_usd": 2,
              "reserved_usd": 0, "remaining_usd": 0, "hard": False}]
    for budget_status, expected in ((status, {"spend": spend}),
                                    (unreachable, {"spend_error": "budgets could not be read: UNAVAILABLE"})):
        app = web.Application()
        KeysAdmin(KeyStore(config_keys()), None, config_keys(), budget_status=budget_status).register(app)
        async with TestClient(TestServer(app)) as client:
            reply = await client.get("/admin/keys/app", params={"end_user": "alice"}, headers=bearer(ADMIN))
            body = await reply.json()
            too_long = await client.get("/admin/keys/app", params={"end_user": "x" * 257}, headers=bearer(ADMIN))
            refused = await too_long.json()
        assert reply.status == 200 and body["id"] == "app"  # the key is shown either way
        assert {k: body[k] for k in expected} == expected
        assert too_long.status == 400 and refused["error"]["param"] == "end_user"


# --- a re-read racing this replica's own writes --------------------------------------------------

def spec(key_id: str) -> ApiKeySpec:
    return ApiKeySpec(id=key_id, sha256=hash_key(key_id), prefix=key_prefix("sy_" + key_id))


def test_a_reread_keeps_a_newer_write_of_this_replica_and_drops_what_was_removed() -> None:
    held = {"mine": spec("mine"), "rotated": spec("rotated-by-me"), "gone": spec("gone")}
    held_revisions = {"mine": 12, "rotated": 11, "gone": 3, "revoked": 13}
    fresh = {"rotated": spec("rotated-before"), "revoked": spec("revoked"), "other": spec("other")}
    fresh_revisions = {"rotated": 9, "revoked": 8, "other": 10}
    keys, revisions = merge_reread(held, held_revisions, fresh, fresh_revisions, position=10)
    # "mine" was written after the snapshot's position: kept; "rotated" is newer here than in
    # the snapshot: this replica's version wins; "revoked" was deleted here after the snapshot
    # read it: stays deleted; "gone" is not in the snapshot and no newer than it: removed.
    assert set(keys) == {"mine", "rotated", "other"}
    assert keys["rotated"].sha256 == hash_key("rotated-by-me")
    assert revisions == {"mine": 12, "rotated": 11, "revoked": 13, "other": 10}


def test_a_reread_wins_over_an_older_state_held_here() -> None:
    held, held_revisions = {"k": spec("mine")}, {"k": 5}
    keys, _ = merge_reread(held, held_revisions, {"k": spec("theirs")}, {"k": 7}, position=7)
    assert keys["k"].sha256 == hash_key("theirs")  # another replica rotated it after this one's write
    keys, _ = merge_reread({}, {"k": 8}, {"k": spec("theirs")}, {"k": 9}, position=9)
    assert "k" in keys  # re-created elsewhere after this replica revoked it


class LateWatch:
    """A watcher whose snapshot ends just after ``write`` ran: the write's own
    message then reaches the watch only after the re-read was published, as it
    does when a write lands while a re-read is under way."""

    def __init__(self, real, write: Callable[[], Awaitable[None]]) -> None:
        self.real, self.write = real, write

    async def updates(self, timeout: float = 5.0):  # noqa: ASYNC109
        entry = await self.real.updates(timeout)
        if entry is None and self.write is not None:
            write, self.write = self.write, None
            await write()
        return entry

    async def stop(self) -> None:
        await self.real.stop()


@pytest.mark.parametrize("operation", ["create", "revoke"])
async def test_a_write_during_a_reread_is_never_undone(nats_server: NatsServer, operation: str) -> None:
    store = KeyStore(config_keys())
    seen: list[set[str]] = []
    managed = ManagedKeys(nats_server.url, lambda keys: (seen.append(set(keys)), store.set_managed(keys)))
    await managed.start(wait_s=10)
    try:
        await managed.create(spec("old"))
        await until(lambda: managed._revisions.get("old", 0) > 0 and "old" in managed.keys)
        written = asyncio.Event()

        async def write() -> None:
            if operation == "create":
                await managed.create(spec("new"))
            else:
                _, revision = await managed.get("old")
                await managed.revoke("old", revision)
            seen.clear()  # from here on, every published set must hold the write
            written.set()

        real_watchall = managed._kv.watchall

        async def late_watchall(**kwargs):
            return LateWatch(await real_watchall(**kwargs), write)

        managed._kv.watchall = late_watchall
        managed._resync.set()  # what a reconnect does
        await asyncio.wait_for(written.wait(), 10)
        expected = (lambda keys: "new" in keys) if operation == "create" else (lambda keys: "old" not in keys)
        # The re-read's set is published right after the write; the write's own watch message later.
        await until(lambda: bool(seen))
        assert all(expected(keys) for keys in seen), seen
        assert expected(managed.keys)
    finally:
        await managed.close()


async def test_a_revoke_that_lost_the_race_is_a_conflict(nats_server: NatsServer) -> None:
    _, _, managed = await edge(nats_server.url)
    try:
        await managed.create(spec("k"))
        _, revision = await managed.get("k")
        await managed.replace(spec("k"), revision)  # rotated meanwhile
        with pytest.raises(KeyWrongLastSequenceError):
            await managed.revoke("k", revision)
        assert "k" in managed.keys
    finally:
        await managed.close()
