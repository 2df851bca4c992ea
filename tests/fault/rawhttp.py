"""HTTP/1.1 over raw sockets, for what aiohttp and the openai SDK smooth over:
connections opened first and requests fired at once (a burst of new
connections), a chosen loopback source address (a distinct client address
as Envoy sees it), bodies that trickle in, clients that do not read."""

from __future__ import annotations

import asyncio
import collections
import socket
from dataclasses import dataclass

import orjson


@dataclass
class Answer:
    status: int  # 0: the connection closed with no answer at all
    headers: dict[str, str]
    body: bytes

    @property
    def kind(self) -> str:
        """'ok', 'json <status>' for an OpenAI error envelope, else 'text <status>'."""
        if self.status == 200:
            return "ok"
        if self.headers.get("content-type", "").startswith("application/json"):
            try:
                error = orjson.loads(self.body)["error"]
                if set(error) == {"message", "type", "param", "code"}:
                    return f"json {self.status}"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return f"text {self.status}"


def chat_request(api_key: str, body: dict, *, content_length: int | None = None) -> tuple[bytes, bytes]:
    """Request head and body of a chat completion (``Connection: close``)."""
    data = orjson.dumps(body)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {content_length or len(data)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return head, data


def parse(data: bytes) -> Answer:
    """A whole answer read until the server closed (chunked bodies kept raw)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return Answer(0, {}, data)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Answer(int(parts[1]), headers, body)


async def read_sized_answer(reader: asyncio.StreamReader) -> Answer:
    """An answer with a content-length, read as soon as it arrives and without
    waiting for the server to close (after an answer to an incomplete upload
    the proxy resets the connection, and a reset discards unread data)."""
    head = await reader.readuntil(b"\r\n\r\n")
    answer = parse(head)
    answer.body = await reader.readexactly(int(answer.headers.get("content-length", "0")))
    return answer


async def connect(port: int, source: str = "127.0.0.1",
                  rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to Envoy from ``source``; ``rcvbuf`` fixes the receive
    buffer before the handshake (a client that does not read: the kernel
    holds only that much for it, and advertises no more)."""
    if rcvbuf is None:
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


ANSWER_TIMEOUT_S = 120


async def exchange(port: int, request: bytes, *, source: str = "127.0.0.1") -> Answer:
    reader, writer = await connect(port, source)
    try:
        writer.write(request)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            return parse(await reader.read())
    finally:
        writer.close()


async def burst(port: int, request: bytes, count: int) -> list[Answer]:
    """``count`` connections opened first, then ``request`` written on all of
    them at once: a burst of new connections reaching Envoy together."""
    connections = await asyncio.gather(*(connect(port) for _ in range(count)))
    go = asyncio.Event()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer:
        try:
            await go.wait()
            writer.write(request)
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                return parse(await reader.read())
        except (ConnectionError, TimeoutError) as exc:
            return Answer(0, {}, repr(exc).encode())
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(reader, writer)) for reader, writer in connections]
    go.set()
    return await asyncio.gather(*tasks)


def shares(answers: list[Answer]) -> dict[str, int]:
    return dict(collections.Counter(answer.kind for answer in answers))
