"""A small HTTP/1.1 server protocol on asyncio and httptools.

Keep-alive, pipelining (answered in order), ``Content-Length`` for whole responses, chunked
encoding for streams, 400 on unparseable input. A handler either answers at once (returns
``None``) or returns a coroutine, run as a task that is cancelled when the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

log = logging.getLogger("simulator.http")

MAX_BODY = 32 * 1024 * 1024
MAX_QUEUED = 32
JSON = b"application/json"
SSE = b"text/event-stream; charset=utf-8"
_STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
_SERVER = b"server: vllm-simulator\r\n"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_date_cache: list[Any] = [0, b""]


def _date_header() -> bytes:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return cast(bytes, _date_cache[1])


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        path, _, query = target.partition(b"?")
        self.method = method
        self.path = path.decode("latin-1")
        self.query = query.decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> str | None:
        """A header by lower-case name."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def headers_line(self, name: bytes) -> bytes:
        """``name: value\r\n`` to echo a received header back, or nothing."""
        value = self.headers.get(name)
        return b"" if value is None else name + b": " + value + b"\r\n"


Handler = Callable[[Request, "Connection"], Coroutine[Any, Any, None] | None]


class Connection(asyncio.Protocol):
    """One client connection. Handlers answer through :meth:`send` or the stream methods."""

    def __init__(self, handler: Handler, registry: set[Connection]) -> None:
        self._handler = handler
        self._registry = registry
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._bad_input = 0  # status to answer once the queue is done
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._too_large = False
        self.keep_alive = True
        self.response_started = False

    # ----------------------------------------------------------------- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._registry.discard(self)
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def data_received(self, data: bytes) -> None:
        if self._bad_input:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad_input = 400
        except httptools.HttpParserError:
            self._bad_input = self._bad_input or 400
        self._process()
        if len(self._queue) > MAX_QUEUED and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()

    def pause_writing(self) -> None:
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter = self._drain_waiter
        self._drain_waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._too_large = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        expect = self._headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and self._idle():
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            self._bad_input = 413
            return
        method = self._parser.get_method().decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        keep = self._parser.should_keep_alive()
        self._queue.append(Request(method, self._url, self._headers, body, keep))

    # ---------------------------------------------------------------------- dispatching
    def _idle(self) -> bool:
        return self._task is None and not self._queue

    def _process(self) -> None:
        while self._task is None and self._queue and not self._closed:
            request = self._queue.popleft()
            self.keep_alive = request.keep_alive
            self.response_started = False
            try:
                coro = self._handler(request, self)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                self._internal_error()
                continue
            if coro is not None:
                self._task = asyncio.get_running_loop().create_task(coro)
                self._task.add_done_callback(self._task_done)
        if self._task is None and not self._closed:
            if self._bad_input:
                self.keep_alive = False
                self.send(self._bad_input, b'{"detail":"Invalid HTTP request"}')
            elif self._reading_paused and self._transport is not None:
                self._reading_paused = False
                self._transport.resume_reading()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("handler task failed", exc_info=exc)
                self._internal_error()
        if not self._closed:
            self._process()

    def _internal_error(self) -> None:
        if self._closed:
            return
        if self.response_started:
            self.abort()
        else:
            self.keep_alive = False
            self.send(500, b'{"detail":"Internal Server Error"}')

    # ------------------------------------------------------------------------- writing
    @property
    def closed(self) -> bool:
        return self._closed

    def _write(self, data: bytes) -> None:
        if self._closed or self._transport is None:
            raise ConnectionResetError("client disconnected")
        try:
            self._transport.write(data)
        except RuntimeError as exc:  # uvloop: the handle is already closed
            raise ConnectionResetError("client disconnected") from exc

    def _done(self) -> None:
        if not self.keep_alive and self._transport is not None:
            self._closed = True
            self._transport.close()

    def _head(self, status: int, content_type: bytes, framing: bytes, headers: bytes) -> bytes:
        self.response_started = True
        close = b"" if self.keep_alive else _CLOSE
        return b"%s%s%scontent-type: %s\r\n%s%s%s\r\n" % (
            status_line(status),
            _date_header(),
            _SERVER,
            content_type,
            framing,
            close,
            headers,
        )

    def send(
        self, status: int, body: bytes, content_type: bytes = JSON, headers: bytes = b""
    ) -> None:
        """A whole response with ``Content-Length``; closes unless keep-alive."""
        length = b"content-length: %d\r\n" % len(body)
        self._write(self._head(status, content_type, length, headers) + body)
        self._done()

    def send_stream(self, body: bytes, headers: bytes = b"") -> None:
        """A whole chunked 200 stream in one write (one chunk plus the terminator)."""
        head = self._head(200, SSE, _CHUNKED, headers)
        self._write(b"%s%x\r\n%s\r\n0\r\n\r\n" % (head, len(body), body))
        self._done()

    def start_stream(self, headers: bytes = b"") -> None:
        self._write(self._head(200, SSE, _CHUNKED, headers))

    def write_chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self, data: bytes = b"") -> None:
        self._write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data) if data else _LAST_CHUNK)
        self._done()

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("client disconnected")
        waiter = self._drain_waiter
        if waiter is not None:
            await waiter

    async def flush_and_abort(self) -> None:
        """Let what was written reach the socket, then reset the connection (RST)."""
        transport = self._transport
        if transport is None or self._closed:
            return
        # With a high-water mark of 0 the transport pauses us while anything is buffered.
        transport.set_write_buffer_limits(high=0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.drain()
        self.abort()

    def abort(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        self._closed = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def close_all(connections: set[Connection]) -> None:
    for connection in list(connections):
        connection.abort()
