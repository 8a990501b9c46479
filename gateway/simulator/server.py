"""Routing, the small endpoints, ``/sim/*`` introspection, and the server's life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from simulator import VERSION_STRING
from simulator.chat import ChatCompletions
from simulator.config import Runtime, Settings
from simulator.httpproto import Connection, Request, close_all
from simulator.stats import Stats
from simulator.wire import model_list

Route = Callable[[Request, Connection], Coroutine[Any, Any, None] | None]
_NOT_FOUND = b'{"detail":"Not Found"}'
_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


class App:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.initial_runtime = runtime.copy()
        self.stats = Stats(settings.max_num_seqs, settings.kv_cache_tokens)
        self.connections: set[Connection] = set()
        self.created = int(time.time())
        self.chat = ChatCompletions(settings, runtime, self.stats)
        self.routes: dict[str, dict[str, Route]] = {
            "/v1/chat/completions": {"POST": self.chat},
            "/v1/completions": {"POST": self.chat.completions},
            "/v1/embeddings": {"POST": self.chat.embeddings},
            "/v1/models": {"GET": self._models},
            "/health": {"GET": self._health},
            "/ping": {"GET": self._health, "POST": self._health},
            "/version": {"GET": self._version},
            "/metrics": {"GET": self._metrics},
            "/sim/stats": {"GET": self._sim_stats},
            "/sim/requests": {"GET": self._sim_requests},
            "/sim/reset": {"POST": self._sim_reset},
            "/sim/config": {"GET": self._sim_config, "POST": self._sim_set_config},
        }

    def handle(self, request: Request, conn: Connection) -> Coroutine[Any, Any, None] | None:
        methods = self.routes.get(request.path)
        if methods is None:
            conn.send(404, _NOT_FOUND)
            return None
        route = methods.get(request.method)
        if route is None:
            allow = ", ".join(methods).encode()
            conn.send(405, _NOT_ALLOWED, headers=b"allow: " + allow + b"\r\n")
            return None
        return route(request, conn)

    def protocol(self) -> Connection:
        return Connection(self.handle, self.connections)

    # ------------------------------------------------------------------ vLLM endpoints
    def _models(self, request: Request, conn: Connection) -> None:
        conn.send(200, model_list(self.settings.model, self.settings.max_model_len, self.created))

    def _health(self, request: Request, conn: Connection) -> None:
        conn.send(200, b"", content_type=b"text/plain; charset=utf-8")

    def _version(self, request: Request, conn: Connection) -> None:
        conn.send(200, orjson.dumps({"version": VERSION_STRING}))

    def _metrics(self, request: Request, conn: Connection) -> None:
        conn.send(200, self.stats.prometheus(self.settings.model), content_type=_PROMETHEUS)

    # ------------------------------------------------------------------ /sim endpoints
    def _sim_stats(self, request: Request, conn: Connection) -> None:
        conn.send(200, orjson.dumps(self.stats.snapshot()))

    def _sim_requests(self, request: Request, conn: Connection) -> None:
        conn.send(200, orjson.dumps(self.stats.requests()))

    def _sim_reset(self, request: Request, conn: Connection) -> None:
        """Zero counters and history; ``{"config": true}`` also restores the start-up config."""
        options: Any = {}
        if request.body.strip():
            try:
                options = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                conn.send(400, b'{"detail":"invalid JSON"}')
                return
        self.stats.reset()
        if isinstance(options, dict) and options.get("config"):
            self.runtime.update(self.initial_runtime.as_dict())
        conn.send(200, orjson.dumps({"reset": True, **self.stats.snapshot()}))

    def _sim_config(self, request: Request, conn: Connection) -> None:
        conn.send(200, orjson.dumps(self.runtime.as_dict()))

    def _sim_set_config(self, request: Request, conn: Connection) -> None:
        try:
            changes = orjson.loads(request.body)
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object")
            self.runtime.update(changes)
        except ValueError as exc:  # JSONDecodeError is a ValueError
            conn.send(400, orjson.dumps({"detail": str(exc)}))
            return
        conn.send(200, orjson.dumps(self.runtime.as_dict()))


async def serve(settings: Settings, runtime: Runtime) -> None:
    """Listen until SIGTERM/SIGINT, then close every connection and return."""
    loop = asyncio.get_running_loop()
    app = App(settings, runtime)
    if settings.startup_delay_s:
        print(f"simulator loading for {settings.startup_delay_s:g}s", flush=True)
        await asyncio.sleep(settings.startup_delay_s)
    server = await loop.create_server(
        app.protocol, settings.host, settings.port, reuse_address=True, backlog=4096
    )
    port = server.sockets[0].getsockname()[1] if server.sockets else settings.port
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    print(f"simulator listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        close_all(app.connections)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
        print("simulator stopped", file=sys.stderr, flush=True)
