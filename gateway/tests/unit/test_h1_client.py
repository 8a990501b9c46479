"""The relay's HTTP/1.1 client (`app.services.h1`) against real sockets, on asyncio's loop and on
uvloop's (the server runs on uvloop: a uvloop transport is not an `asyncio.Transport`).

Each case starts a raw TCP server that answers as a model server might (keep-alive, chunked,
Content-Length, close-delimited, dropping idle connections, dropping mid-answer, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from app.services import h1

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def run_both(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    @pytest.mark.parametrize("loop", list(RUNNERS))
    def wrapper(loop: str) -> None:
        RUNNERS[loop](asyncio.wait_for(test(), 20))

    wrapper.__name__ = test.__name__
    return wrapper


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (Content-Length), or None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


class Rig:
    """A server on a free port, a pool and the target URL; `accepted` counts connections."""

    def __init__(self, server: asyncio.Server, url: str, accepted: list[int], limit: int) -> None:
        self.server, self.url, self.accepted = server, url, accepted
        self.pool = h1.H1Pool(limit, 2.0)
        self.target = h1.Target(url)


@contextlib.asynccontextmanager
async def serving(handler: Handler, limit: int = 10) -> AsyncIterator[Rig]:
    server, url, accepted = await serve(handler)
    rig = Rig(server, url, accepted, limit)
    try:
        yield rig
    finally:
        rig.pool.close()
        server.close()


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    """A server on a free port; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/chat/completions", accepted


def chunked(*parts: bytes) -> bytes:
    out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    out += b"transfer-encoding: chunked\r\n\r\n"
    for part in parts:
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def sized(body: bytes, status: int = 200, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (status, len(body), extra, body)


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    seen = []
    while (req := await read_request(reader)) is not None:
        seen.append(req)
        writer.write(chunked(b"data: one\n\n", b"data: " + req[1] + b"\n\n", b"data: [DONE]\n\n"))
        await writer.drain()


def answers_with(raw: bytes) -> Handler:
    """A server that reads one request, writes `raw` and closes the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    return handle


@run_both
async def test_streams_and_reuses_one_connection() -> None:
    async with serving(keep_answering) as rig:
        for i in range(3):
            conn = await rig.pool.post(
                rig.target, b"body%d" % i, h1.header_lines({"x-request-id": "r1"})
            )
            assert conn.status == 200
            data = await conn.read()
            assert data == b"data: one\n\ndata: body%d\n\ndata: [DONE]\n\n" % i
            conn.release()
        assert len(rig.accepted) == 1  # keep-alive: one connection for the three
        assert rig.pool.open_connections == 1


@run_both
async def test_request_head_and_body_as_sent() -> None:
    got: list[tuple[bytes, bytes]] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        assert req is not None
        got.append(req)
        writer.write(sized(b"{}"))
        await writer.drain()

    async with serving(record) as rig:
        conn = await rig.pool.post(rig.target, b'{"a":1}', h1.header_lines({"x-request-id": "abc"}))
        assert await conn.read() == b"{}"
        conn.release()
        head, body = got[0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        lines = head.lower().split(b"\r\n")
        assert b"content-type: application/json" in lines
        assert b"content-length: 7" in lines
        assert b"x-request-id: abc" in lines
        assert any(line.startswith(b"host: 127.0.0.1:") for line in lines)
        assert body == b'{"a":1}'


@run_both
async def test_chunks_arrive_as_they_are_sent() -> None:
    go_on = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with serving(slow) as rig:
        conn = await rig.pool.post(rig.target, b"{}")
        assert await conn.chunk() == b"first"  # before the rest exists
        assert not conn.done
        go_on.set()
        assert await conn.chunk() == b"second"
        assert await conn.chunk() == b""
        assert conn.done
        conn.release()


@run_both
async def test_dropped_idle_connection_is_sent_on_once_more() -> None:
    async def one_answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # keep-alive promised, then the idle connection is dropped (llama.cpp's server, a
        # restarted vLLM): the client finds out only when it sends the next request
        if await read_request(reader) is not None:
            writer.write(sized(b"ok"))
            await writer.drain()

    async with serving(one_answer_then_close) as rig:
        for _ in range(3):
            conn = await rig.pool.post(rig.target, b"{}")
            assert await conn.read() == b"ok"
            conn.release()
            await asyncio.sleep(0)
        assert len(rig.accepted) == 3


@run_both
async def test_answer_delimited_by_close() -> None:
    http10 = answers_with(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
    async with serving(http10) as rig:
        conn = await rig.pool.post(rig.target, b"{}")
        assert await conn.read() == b"all of it"
        conn.release()


@run_both
async def test_drop_mid_answer_is_an_error_after_what_arrived() -> None:
    drop = answers_with(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n")
    async with serving(drop) as rig:
        conn = await rig.pool.post(rig.target, b"{}")
        assert await conn.chunk() == b"part"
        with pytest.raises(ConnectionError):
            while await conn.chunk():
                pass
        conn.release()  # not reusable: closed, not pooled
        assert rig.pool.open_connections == 0


@run_both
async def test_closed_before_answering_on_a_new_connection_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with serving(hang_up) as rig:
        with pytest.raises(h1.ClosedBeforeAnswer):
            await rig.pool.post(rig.target, b"{}")
        assert len(rig.accepted) == 1  # a new connection is not tried twice


@run_both
async def test_garbage_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with serving(garbage) as rig:
        with pytest.raises(h1.ProtocolError):
            await rig.pool.post(rig.target, b"{}")


@run_both
async def test_refused_is_connect_failed() -> None:
    server, url, _ = await serve(keep_answering)
    server.close()
    await server.wait_closed()
    pool = h1.H1Pool(10, 2.0)
    with pytest.raises(h1.ConnectFailed):
        await pool.post(h1.Target(url), b"{}")
    assert pool.open_connections == 0


@run_both
async def test_error_status_body_is_read() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(sized(b'{"error":{"message":"bad"}}', 400))
            await writer.drain()

    async with serving(refuse) as rig:
        for _ in range(2):
            conn = await rig.pool.post(rig.target, b"{}")
            assert conn.status == 400
            assert await conn.read() == b'{"error":{"message":"bad"}}'
            conn.release()
        assert len(rig.accepted) == 1


@run_both
async def test_limit_makes_the_next_request_wait_for_a_connection() -> None:
    release = asyncio.Event()

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await release.wait()
            writer.write(sized(b"ok"))
            await writer.drain()

    async with serving(held, limit=1) as rig:
        first = asyncio.ensure_future(rig.pool.post(rig.target, b"{}"))
        second = asyncio.ensure_future(rig.pool.post(rig.target, b"{}"))
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
        assert rig.pool.open_connections == 1
        release.set()
        conn = await first
        assert await conn.read() == b"ok"
        conn.release()  # the one connection goes to the waiting request
        conn2 = await second
        assert await conn2.read() == b"ok"
        conn2.release()
        assert len(rig.accepted) == 1


@run_both
async def test_cancelled_while_waiting_closes_the_connection() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # until the client closes

    async with serving(never) as rig:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await rig.pool.post(rig.target, b"{}")
        deadline = asyncio.get_running_loop().time() + 5
        while rig.pool.open_connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert rig.pool.open_connections == 0


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        h1.header_lines({"x-request-id": "a\r\nx-evil: 1"})


def test_target_parts() -> None:
    t = h1.Target("https://models.example:8443/v1/chat/completions?x=1")
    assert (t.host, t.port, t.ssl) == ("models.example", 8443, True)
    assert t.head.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: models.example:8443")
    assert h1.Target("http://[::1]/v1").head.split(b"\r\n")[1] == b"host: [::1]"
    with pytest.raises(ValueError):
        h1.Target("unix:///tmp/x")
