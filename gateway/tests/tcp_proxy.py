"""A TCP proxy the tests can cut and restore: a real outage as a client sees it (connections
reset, new ones refused), without touching the shared server behind it. It can also hold the
server's replies back (`hold_replies`) until told (`release_replies`): a slow server, exactly
when the test wants it."""

from __future__ import annotations

import asyncio
import contextlib

from tests.ports import free_port


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._replies = asyncio.Event()
        self._replies.set()
        self.held = 0  # replies from the server waiting for release_replies()

    def drop_connections(self) -> None:
        """Reset every connection through it (new ones are still taken)."""
        for writer in list(self._writers):
            writer.transport.abort()

    def hold_replies(self) -> None:
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.drop_connections()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool = False
        ) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if replies and not self._replies.is_set():
                        self.held += 1
                        await self._replies.wait()
                        self.held -= 1
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer, replies=True))
        self._writers -= {writer, up_writer}
