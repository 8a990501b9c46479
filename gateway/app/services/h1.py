"""A small HTTP/1.1 client for the relay's POSTs to the model server (issue 17).

aiohttp's client was the largest single cost of a relayed request (~24 % of the gateway's CPU
at c32: request and header objects, the connector's bookkeeping, a stream reader per answer).
This one does what the relay needs and nothing else: keep-alive connections per server (at
most `limit` open), the request head built once per URL, httptools' response parser (the one
uvicorn uses), the body handed over as it arrives. Everything else (GETs, probes, pools) stays
on aiohttp.

Errors are OSErrors (`ConnectionError` and its kinds, `ssl.SSLError`); the caller
(`UpstreamClient`) maps them to the SPEC's. A request sent on a reused connection that the
server closed before answering anything (an idle keep-alive it dropped) is sent once more on a
new connection: nothing was answered, so nothing was processed twice.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

# a connection idle for longer is closed rather than reused (servers drop idle ones: uvicorn
# after 5 s by default, vLLM's own setting; reuse of a dropped one costs a second send)
KEEPALIVE_S = 4.0
# an answer's body held unread beyond this pauses reading from the server (backpressure)
HIGH_WATER = 1 << 20


class ProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 as it should be."""


class ConnectFailed(ConnectionError):
    """No connection could be made (refused, unreachable, unknown host, TLS failed)."""


class ClosedBeforeAnswer(ConnectionResetError):
    """The connection closed before any byte of an answer arrived."""


class Target:
    """One URL to POST to: its connection key and its request head, built once."""

    __slots__ = ("head", "host", "key", "port", "ssl")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.ssl = parts.scheme == "https"
        self.host = parts.hostname
        default = 443 if self.ssl else 80
        self.port = parts.port or default
        self.key = (self.host, self.port, self.ssl)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        host = netloc if self.port == default else f"{netloc}:{self.port}"
        self.head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            "accept: */*\r\n"
        ).encode("latin-1")


def header_lines(headers: dict[str, str]) -> bytes:
    """Extra request headers as bytes; a value with a line break is refused (no injection)."""
    out = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r}: line break in value")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode("latin-1")


class Conn(asyncio.Protocol):
    """One connection and the answer being read on it."""

    __slots__ = (
        "_body",
        "_done",
        "_exc",
        "_head",
        "_parser",
        "_size",
        "_te_chunked",
        "_waiter",
        "closed",
        "content_length",
        "got_bytes",
        "idle_since",
        "keep_alive",
        "key",
        "paused",
        "pool",
        "status",
        "transport",
    )

    def __init__(self, pool: H1Pool, key: tuple[str, int, bool]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.content_length: int | None = None
        self._te_chunked = False
        self.got_bytes = False
        self._head: asyncio.Future[None] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool._lost(self)
        if self._done:
            return
        if self.status and self.content_length is None and not self._te_chunked:
            self._done = True  # an answer delimited by the connection's end (HTTP/1.0 style)
            self.keep_alive = False
            self._wake()
            return
        if not self.got_bytes:
            self._fail(ClosedBeforeAnswer("the server closed the connection before answering"))
        else:
            self._fail(exc or ConnectionResetError("the server closed the connection mid-answer"))

    # --- httptools callbacks -----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == b"content-length":
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = None
        elif lower == b"transfer-encoding" and b"chunked" in value.lower():
            self._te_chunked = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._size += len(body)
        if self._size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.status:  # the end of an interim answer
            return
        self._done = True
        self._wake()

    # --- state --------------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
            head.exception()  # retrieved: no "never retrieved" warning when nobody waits
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes) -> asyncio.Future[None]:
        """Write a request; the future completes when the answer's head has arrived."""
        self._reset()
        self._head = self.pool.loop.create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self._head

    # --- reading ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The whole answer has arrived (some of it may not be taken yet)."""
        return self._done

    def take(self) -> bytes:
        """What has arrived and not been taken (b"" when nothing has)."""
        body = self._body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        self._body = []
        self._size = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def chunk(self) -> bytes:
        """What arrives next (waits for some); b"" at the end of the answer."""
        while True:
            if self._body:
                return self.take()
            if self._done:
                return b""
            if self._exc is not None:
                raise self._exc
            self._waiter = self.pool.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        """The rest of the answer, whole."""
        parts = []
        while piece := await self.chunk():
            parts.append(piece)
        return b"".join(parts)

    def release(self) -> None:
        """The answer was read to its end: the connection goes back to the pool (or closes)."""
        if self._done and self.keep_alive and not self._body and not self.closed:
            self.pool._idle_again(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Close the connection (the server then stops what it was doing for this request)."""
        if self.transport is not None and not self.closed:
            self.transport.close()


class Sent:
    """A request written to its connection (`H1Pool.send`), its answer not waited for yet."""

    __slots__ = ("_head", "conn", "data", "pool", "reused", "target")

    def __init__(self, pool: H1Pool, target: Target, data: bytes, conn: Conn, reused: bool) -> None:
        self.pool, self.target, self.data = pool, target, data
        self.conn, self.reused = conn, reused
        self._head = conn.send(data)

    async def answer(self) -> Conn:
        """The connection, once the answer's head has arrived. A reused connection that the
        server had dropped before answering anything is replaced and the request sent again."""
        while True:
            try:
                await self._head
            except ClosedBeforeAnswer:
                if not self.reused:
                    raise
                self.conn, _ = await self.pool._acquire(self.target)
                self.reused = False  # sent once more at most
                self._head = self.conn.send(self.data)
                continue
            except BaseException:  # cancelled, timed out, failed: the connection's state is unknown
                self.conn.abort()
                raise
            return self.conn

    def abort(self) -> None:
        """Not wanted after all: close the connection (the server drops the request)."""
        self.conn.abort()


class H1Pool:
    """Keep-alive connections per (host, port, tls); at most `limit` open at once."""

    def __init__(self, limit: int, connect_timeout_s: float) -> None:
        self.limit = limit
        self.connect_timeout_s = connect_timeout_s
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, int, bool], list[Conn]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._closing = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def post(self, target: Target, body: bytes, headers: bytes = b"") -> Conn:
        """Send a POST; returns its connection once the answer's head has arrived (`status`).
        The caller reads it (`chunk`, `read`) and then `release`s or `abort`s it."""
        return await (await self.send(target, body, headers)).answer()

    async def send(self, target: Target, body: bytes, headers: bytes = b"") -> Sent:
        """Send a POST and return at once (waiting only for a connection): `Sent.answer()`
        waits for the head. Between the two, the caller may wait for something else."""
        data = b"".join((target.head, headers, b"content-length: %d\r\n\r\n" % len(body), body))
        conn, reused = await self._acquire(target)
        return Sent(self, target, data, conn, reused)

    async def _acquire(self, target: Target) -> tuple[Conn, bool]:
        idle = self._idle.get(target.key)
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                    return conn, True
                conn.abort()
        while self._open >= self.limit:
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            idle = self._idle.get(target.key)
            if idle:  # one came back meanwhile
                return await self._acquire(target)
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: Conn(self, target.key),
                    target.host,
                    target.port,
                    ssl=self._ssl_context() if target.ssl else None,
                    server_hostname=target.host if target.ssl else None,
                )
        except BaseException as exc:
            self._open -= 1
            self._wake_one()
            if isinstance(exc, OSError):
                raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
            raise
        return conn, False  # asyncio and uvloop set TCP_NODELAY on TCP connections

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _idle_again(self, conn: Conn) -> None:
        if self._closing:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)
        self._wake_one()

    def _lost(self, conn: Conn) -> None:
        self._open -= 1
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close the idle connections; busy ones close when their answer ends."""
        self._closing = True
        for idle in self._idle.values():
            for conn in list(idle):
                conn.abort()
        self._idle.clear()
