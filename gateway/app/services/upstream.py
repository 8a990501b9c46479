"""The model server as the gateway sees it, and the only module that talks to it: requests
(`post`, `get_json`, `probe`), the served model and the names it answers to, the mapping of the
server's statuses and transport failures to the SPEC's, and SSE framing (`split_events`).

The relay's POSTs to one server go through `app.services.h1` (a small keep-alive HTTP/1.1
client: aiohttp's was ~24 % of the gateway's CPU per streamed request, issue 17); GETs, probes
and a pool's POSTs use one pooled aiohttp session (aiohttp rather than httpx: a fraction of
httpx's cost per request and per chunk).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
import structlog

from app.core import tracing
from app.core.config import Settings
from app.core.errors import AppError, NotFound, ValidationFailed
from app.services import h1

if TYPE_CHECKING:
    from app.model_manager.gate import ServingGate
    from app.services.pool import InstancePool

log = structlog.get_logger()


class Endpoint(StrEnum):
    """The model server's endpoint a request is relayed to (a path under its `/v1`)."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


class UpstreamError(AppError):
    """The model server failed; status 502 (bad answer), 503 (not serving) or 504 (too slow)."""


def model_unavailable(detail: str) -> UpstreamError:
    return UpstreamError(
        f"the model server is not available: {detail}",
        code="model_unavailable",
        status_code=503,
        headers={"Retry-After": "5"},
    )


def upstream_timeout(what: str) -> UpstreamError:
    return UpstreamError(
        f"the model server timed out ({what})", code="upstream_timeout", status_code=504
    )


def upstream_failed(detail: str) -> UpstreamError:
    return UpstreamError(
        f"the model server failed: {detail}", code="upstream_error", status_code=502
    )


def _context_length(model: dict[str, Any]) -> int | None:
    """vLLM says `max_model_len`; llama.cpp's server says `meta.n_ctx` (per request context)."""
    value = model.get("max_model_len")
    if not isinstance(value, int):
        meta = model.get("meta")
        value = meta.get("n_ctx") if isinstance(meta, dict) else None
    return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, slots=True)
class ServedModel:
    id: str
    max_model_len: int | None
    created: int
    owned_by: str
    # the client of the server that serves it (several models at once: `model_manager/fleet.py`)
    client: UpstreamClient | None = field(default=None, compare=False, repr=False)


def map_status(
    status: int, detail: str, param: str | None = None, endpoint: Endpoint = Endpoint.CHAT
) -> UpstreamError:
    if status in (400, 413, 422):
        return UpstreamError(
            f"the model server rejected the request: {detail}",
            code="upstream_rejected",
            status_code=400,
            param=param,
        )
    if status in (404, 405) and endpoint is not Endpoint.CHAT:
        # vLLM registers /v1/embeddings (and /v1/completions) only for models that serve them
        return UpstreamError(
            f"the served model does not offer /v1/{endpoint.value} ({detail})",
            code="endpoint_not_supported",
            status_code=400,
        )
    if status == 429:
        return UpstreamError(
            "the model server is busy, retry shortly",
            code="rate_limited",
            status_code=429,
            headers={"Retry-After": "1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"},
        )
    if status in (404, 503):
        return model_unavailable(f"answered {status}")
    if status == 504:
        return upstream_timeout("gateway timeout upstream")
    return upstream_failed(f"answered {status}")


def error_detail(raw: bytes) -> str:
    return error_fields(raw)[0]


def error_fields(raw: bytes) -> tuple[str, str | None]:
    """An upstream error body's message and `param` (vLLM's and OpenAI's shape)."""
    try:
        body = orjson.loads(raw)
        err = body.get("error", body) if isinstance(body, dict) else {}
        message = err.get("message") if isinstance(err, dict) else None
        if message is None and isinstance(err, dict):
            message = err.get("detail")  # FastAPI's own 404/405 body
        param = err.get("param") if isinstance(err, dict) else None
        text = str(message or raw[:200].decode(errors="replace"))[:500]
        return text, param if isinstance(param, str) else None
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace"), None


def status_error(status: int, raw: bytes, endpoint: Endpoint) -> UpstreamError:
    detail, param = error_fields(raw)
    return map_status(status, detail, param, endpoint)


def split_events(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events' `data:` payloads, and the unfinished rest of the buffer."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    end = data.rfind(b"\n\n")
    if end < 0:
        return [], data
    head = data[:end]
    blocks = head.split(b"\n\n")
    # what vLLM sends: one `data: ` line per event. Checked without a loop (this runs for every
    # read of every stream): every newline belongs to a separator (so no block holds one), the
    # first block and every one after a separator start with `data: `.
    seps = len(blocks) - 1
    if (
        head.startswith(b"data: ")
        and head.count(b"\n") == 2 * seps
        and head.count(b"\n\ndata: ") == seps
    ):
        return [block[6:] for block in blocks], data[end + 2 :]
    payloads = []
    for block in blocks:
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                payloads.append(line[5:].lstrip(b" "))
    return payloads, data[end + 2 :]


class Answer(Protocol):
    """One answer of the model server, read whole (`read`) or as it arrives (`chunk`);
    transport failures come out as `UpstreamError`. `close` drops the connection (vLLM then
    aborts the generation); `finish` reads to the end after [DONE] so that it can be reused."""

    @property
    def status(self) -> int: ...

    async def read(self) -> bytes: ...

    async def chunk(self) -> bytes: ...

    def close(self) -> None: ...

    async def finish(self) -> None: ...


class Sending(Protocol):
    """A request on its way to the model server (`UpstreamClient.send`)."""

    async def answer(self) -> Answer: ...

    def close(self) -> None: ...


class DirectSending:
    """Sent through `h1`: the answer's head is waited for in `answer()`; a failure comes out
    as `to_error` makes it."""

    __slots__ = ("_sent", "_to_error")

    def __init__(self, sent: h1.Sent, to_error: Callable[[BaseException], BaseException]) -> None:
        self._sent: h1.Sent | None = sent
        self._to_error = to_error

    async def answer(self) -> Answer:
        sent, self._sent = self._sent, None
        assert sent is not None, "answer() once"
        try:
            # a pooled connection the server had just closed (llama.cpp's server closes after
            # every stream) is sent on once more by h1: nothing was answered on it
            conn = await sent.answer()
        except Exception as exc:
            err = self._to_error(exc)
            if err is exc:
                raise
            raise err from exc
        return DirectResponse(conn)

    def close(self) -> None:
        sent, self._sent = self._sent, None
        if sent is not None:
            sent.abort()


class NotSent:
    """A request that could not be written (no connection): `answer()` raises why."""

    __slots__ = ("_error",)

    def __init__(self, error: BaseException) -> None:
        self._error = error

    async def answer(self) -> Answer:
        raise self._error

    def close(self) -> None:
        pass


class PooledSending:
    """Sent through the pool (aiohttp), as a task of its own."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Future[UpstreamResponse]) -> None:
        self._task: asyncio.Future[UpstreamResponse] | None = task

    async def answer(self) -> Answer:
        task, self._task = self._task, None
        assert task is not None, "answer() once"
        return await task

    def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            task.add_done_callback(_close_unread)


def _close_unread(task: asyncio.Future[UpstreamResponse]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()


class DirectResponse:
    """An answer read through `h1` (one server, no pool)."""

    __slots__ = ("_conn", "status")

    def __init__(self, conn: h1.Conn) -> None:
        self._conn: h1.Conn | None = conn
        self.status = conn.status

    async def read(self) -> bytes:
        conn = self._conn
        if conn is None:
            return b""
        try:
            data = await conn.read()
        except OSError as exc:
            self.close()
            raise upstream_failed(type(exc).__name__) from exc
        self._conn = None
        conn.release()
        return data

    async def chunk(self) -> bytes:
        conn = self._conn
        if conn is None:
            return b""
        try:
            return await conn.chunk()
        except OSError as exc:
            raise upstream_failed(f"connection lost mid-stream ({type(exc).__name__})") from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.done:  # the usual case: the end came with [DONE], no timer
            conn.take()
            conn.release()
            return
        try:
            async with asyncio.timeout(1.0):
                while await conn.chunk():
                    pass
            conn.release()
        except (TimeoutError, OSError):
            conn.abort()


class UpstreamResponse:
    """An answer read through aiohttp (a pool's instance)."""

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise upstream_failed(type(exc).__name__) from exc

    async def chunk(self) -> bytes:
        """What has arrived since the last call (waits for some); b"" at the end."""
        try:
            return await self._resp.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise upstream_failed(f"connection lost mid-stream ({type(exc).__name__})") from exc

    def close(self) -> None:
        """Drop the connection (vLLM then aborts the generation)."""
        self._resp.close()

    async def finish(self) -> None:
        """Read to the end after [DONE] so the keep-alive connection can be reused."""
        if self._resp.content.at_eof():  # the usual case: the end came with [DONE], no timer
            self._resp.release()
            return
        try:
            async with asyncio.timeout(1.0):
                while await self._resp.content.readany():
                    pass
            self._resp.release()
        except (TimeoutError, aiohttp.ClientError, OSError):
            self._resp.close()


class UpstreamClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.vllm_base_url.rstrip("/")
        self._targets: dict[str, h1.Target] = {}
        self.session: aiohttp.ClientSession | None = None
        self.h1: h1.H1Pool | None = None
        self._models: list[ServedModel] | None = None
        self._models_at = 0.0
        self._models_lock = asyncio.Lock()
        self._aliases = {a.strip().lower() for a in settings.model_aliases if a.strip()}
        # the serving profile's id and aliases (set by the model manager): names of the served
        # model a request may use besides its id
        self.profile_names: Callable[[], Iterable[str]] = tuple
        # the serving profile's id (set by the model manager; None when nothing is managed), for
        # the usage rows
        self.serving_profile: Callable[[], str | None] = lambda: None
        # several instances serving the model (a profile's `instances`; `services/pool.py`)
        self.pool: InstancePool | None = None
        # several models at once (`model_manager/fleet.py`): a name this server does not serve
        # is looked up in the others; `other_models` lists theirs
        self.route_other: Callable[[str], Awaitable[ServedModel | None]] | None = None
        self.other_models: Callable[[], Awaitable[list[ServedModel]]] | None = None
        # the serving gate of the member this client serves, when it is not the first one: chat
        # requests to its model enter it, so its switch drains them
        self.member_gate: ServingGate | None = None

    def retarget(self, base_url: str) -> None:
        """Send requests to another model server (a switch to an external profile)."""
        self.base_url = base_url.rstrip("/")
        self._targets.clear()
        self.forget_models()

    def target(self, path: Endpoint | str) -> h1.Target:
        """The h1 target (connection key, request head) for a path under its `/v1`."""
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = h1.Target(f"{self.base_url}/{path}")
        return target

    async def start(self) -> None:
        self.h1 = h1.H1Pool(
            self.settings.upstream_max_connections, self.settings.upstream_connect_timeout_s
        )
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_max_connections,
            limit_per_host=self.settings.upstream_max_connections,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.settings.upstream_connect_timeout_s
            ),
            json_serialize=lambda o: orjson.dumps(o).decode(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    # --- pools (issue 15) ----------------------------------------------------------------------
    async def use_pool(self, base_urls: list[str] | None) -> None:
        """Spread requests over several instances (None or one URL: a single server again)."""
        from app.services.pool import InstancePool  # here: pool.py imports this module

        if (
            self.pool is not None
            and base_urls
            and self.pool.base_urls == [u.rstrip("/") for u in base_urls]
        ):
            return
        old, self.pool = self.pool, None
        if old is not None:
            await old.stop()
        if base_urls and len(base_urls) > 1:
            self.retarget(base_urls[0])
            self.pool = InstancePool(
                base_urls,
                session=lambda: self.http,
                health_interval_s=self.settings.upstream_health_interval_s,
                retry_max_s=self.settings.upstream_retry_max_s,
                probe_timeout_s=self.settings.health_probe_timeout_s,
            )
            self.pool.start()

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
        if self.session is not None:
            await self.session.close()
        if self.h1 is not None:
            self.h1.close()

    async def renew_pool(self) -> None:
        """The model server was replaced: its pooled keep-alive connections are dead, so start
        a fresh pool rather than find that out request by request."""
        old, old_h1 = self.session, self.h1
        await self.start()
        self.forget_models()
        if old_h1 is not None:
            old_h1.close()
        if old is not None:
            await old.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "UpstreamClient.start() not called"
        return self.session

    # --- requests -----------------------------------------------------------------------------
    async def post(
        self, endpoint: Endpoint | str, data: bytes, request_id: str | None = None
    ) -> Answer:
        """POST a JSON body; connection failures are `UpstreamError`s (503 refused, 502 other).
        The caller reads and closes the answer."""
        if self.pool is not None:
            return await self.pool.post(endpoint, data, self._headers(request_id, True))
        return await (await self.send(endpoint, data, request_id)).answer()

    async def send(
        self, endpoint: Endpoint | str, data: bytes, request_id: str | None = None
    ) -> Sending:
        """POST a JSON body without waiting for the answer: `answer()` waits for it (and raises
        what `post` raises), `close()` drops it unread. Never raises itself (but cancelled)."""
        if self.pool is not None:
            headers = self._headers(request_id, True)
            return PooledSending(asyncio.ensure_future(self.pool.post(endpoint, data, headers)))
        assert self.h1 is not None, "UpstreamClient.start() not called"
        headers = self._headers(request_id, False)
        try:
            sent = await self.h1.send(
                self.target(endpoint), data, h1.header_lines(headers) if headers else b""
            )
        except Exception as exc:
            return NotSent(self._h1_error(exc))
        return DirectSending(sent, self._h1_error)

    @staticmethod
    def _headers(request_id: str | None, content_type: bool) -> dict[str, str]:
        headers = {"content-type": "application/json"} if content_type else {}
        if request_id:
            headers["x-request-id"] = request_id
        if tracing.inject_headers is not None:
            tracing.inject_headers(headers)  # traceparent: the model server continues the trace
        return headers

    def _h1_error(self, exc: BaseException) -> BaseException:
        """What an h1 failure is to the gateway's callers (`exc` as its cause)."""
        err: BaseException
        if isinstance(exc, h1.ConnectFailed):  # refused, unreachable, unknown host
            self.forget_models()
            err = model_unavailable("connection refused")
        elif isinstance(exc, TimeoutError):
            # connecting took longer than UPSTREAM_CONNECT_TIMEOUT_S
            err = upstream_failed("ConnectionTimeoutError")
        elif isinstance(exc, OSError):
            err = upstream_failed(type(exc).__name__)
        else:
            return exc
        err.__cause__ = exc
        return err

    async def get_json(self, url: str, timeout_s: float = 2.0) -> Any | None:
        """GET a JSON document (any URL of the model server); None when it is not there."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.http.get(url) as resp:
                    if resp.status != 200:
                        return None
                    return orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None  # connection refused is normal while the server loads

    async def probe(self, url: str, timeout_s: float = 2.0) -> bool:
        """Whether a GET of `url` answers 200 in time (`/health`)."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.http.get(url) as resp:
                    await resp.read()
                    return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    # --- the served model ---------------------------------------------------------------------
    async def models(self) -> list[ServedModel]:
        """The upstream's /v1/models, cached for `models_cache_s` (one fetch at a time)."""
        fresh = time.monotonic() - self._models_at < self.settings.models_cache_s
        if self._models is not None and fresh:
            return self._models
        async with self._models_lock:
            if (
                self._models is not None
                and time.monotonic() - self._models_at < self.settings.models_cache_s
            ):
                return self._models
            self._models = await self._fetch_models()
            self._models_at = time.monotonic()
            return self._models

    def forget_models(self) -> None:
        self._models = None

    async def _fetch_models(self) -> list[ServedModel]:
        if self.pool is None:
            return await self._fetch_models_from(self.base_url)
        failure: UpstreamError | None = None
        for base in self.pool.healthy_urls():  # any instance answers for all of them
            try:
                return await self._fetch_models_from(base)
            except UpstreamError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _fetch_models_from(self, base_url: str) -> list[ServedModel]:
        try:
            async with asyncio.timeout(self.settings.upstream_connect_timeout_s + 5):
                async with self.http.get(f"{base_url}/models") as resp:
                    if resp.status != 200:
                        raise model_unavailable(f"/v1/models answered {resp.status}")
                    body = orjson.loads(await resp.read())
        except TimeoutError as exc:
            raise upstream_timeout("listing models") from exc
        except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
            raise model_unavailable(type(exc).__name__) from exc
        models = [
            ServedModel(
                id=str(m["id"]),
                max_model_len=_context_length(m),
                created=int(m.get("created") or 0),
                owned_by=str(m.get("owned_by") or "vllm"),
                client=self,
            )
            for m in body.get("data", [])
            if isinstance(m, dict) and "id" in m
        ]
        if not models:
            raise model_unavailable("no model is loaded")
        return models

    async def all_models(self) -> list[ServedModel]:
        """Every model served: this server's, then the other members' (several at once)."""
        if self.other_models is None:
            return await self.models()
        try:
            own = await self.models()
        except UpstreamError:
            others = await self.other_models()
            if not others:
                raise
            return others
        return [*own, *await self.other_models()]

    async def resolve(self, requested: Any) -> ServedModel:
        """`model` omitted or "current" → the served model; else its id, the serving profile's
        id or one of its aliases, or an alias from MODEL_ALIASES (names: case-insensitive);
        with several models served at once, a name of another member is its model."""
        if self.route_other is None:
            return await self._resolve(requested)
        try:
            return await self._resolve(requested)
        except (NotFound, UpstreamError):
            if not isinstance(requested, str) or requested in ("", "current"):
                raise
            other = await self.route_other(requested)
            if other is None:
                raise
            return other

    async def _resolve(self, requested: Any) -> ServedModel:
        models = await self.models()
        if requested is None or requested == "current" or requested == "":
            return models[0]
        if not isinstance(requested, str):
            raise ValidationFailed("model: must be a string", param="model")
        for model in models:
            if model.id == requested:
                return model
        name = requested.strip().lower()
        for model in models:
            if model.id.lower() == name:
                return model
        if name in self._aliases or name in {n.lower() for n in self.profile_names()}:
            return models[0]
        raise NotFound(
            f"model {requested!r} is not served here", code="model_not_found", param="model"
        )
