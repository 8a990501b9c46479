"""Several model-server instances behind one model (issue 15): a profile's `instances`.

`InstancePool` picks, per request, the least busy healthy instance (fewest outstanding
requests; ties go round-robin), takes an instance out when it refuses a connection, drops one
mid-answer or fails its `/health` probe, and probes it again with backoff (1, 2, 4 ... 30 s)
until it answers, when it takes requests again.

A request that fails before its first byte is sent once more to another instance: the pool
waits for the answer's first chunk (the first SSE event of a stream, the body of a plain
answer) before handing the answer to the relay, so an instance that dies after accepting a
request but before answering anything costs the client nothing. Requests waiting for their
first byte on an instance when it is taken out (its probe failed: a frozen server still accepts
connections) move to another instance at that moment too. Once a byte has been handed
over the answer belongs to that instance; its failure is the relay's usual mid-stream error.

Only `UpstreamClient.post` calls in here, and only when the serving profile has a pool: one
server keeps the plain path of `upstream.py` untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from yarl import URL

from app.core.metrics import (
    UPSTREAM_INSTANCE_OUTSTANDING,
    UPSTREAM_INSTANCE_UP,
    UPSTREAM_RETRIES,
)
from app.services.upstream import (
    UpstreamResponse,
    model_unavailable,
    upstream_failed,
)

log = structlog.get_logger()

# transport failures that mean "this instance did not answer": the request may go elsewhere
_NOT_ANSWERED = (aiohttp.ClientConnectionError, OSError)


class Instance:
    """One model server of a pool: its URLs, load and health."""

    __slots__ = (
        "_lost",
        "base_url",
        "down_since",
        "failures",
        "healthy",
        "last_error",
        "outstanding",
        "retry_at",
        "root",
        "served",
        "taken_out",
        "urls",
    )

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        self.urls: dict[str, URL] = {}
        self.outstanding = 0
        self.healthy = True  # optimistic until the first probe or request says otherwise
        self.failures = 0  # failures in a row: the backoff's exponent
        self.retry_at = 0.0  # monotonic time of the next probe while out
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.served = 0  # requests answered (first chunk received)
        self.taken_out = 0  # times it was taken out
        self._lost: asyncio.Future[None] | None = None

    def lost(self) -> asyncio.Future[None]:
        """Done when the instance is taken out (a new one once it is back)."""
        if self._lost is None or self._lost.done():
            self._lost = asyncio.get_running_loop().create_future()
        return self._lost

    def url(self, path: str) -> URL:
        url = self.urls.get(path)
        if url is None:
            url = self.urls[path] = URL(f"{self.base_url}/{path}")
        return url

    def view(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "healthy": self.healthy,
            "outstanding": self.outstanding,
            "served": self.served,
            "taken_out": self.taken_out,
            "down_for_s": (
                round(time.monotonic() - self.down_since, 3) if self.down_since else None
            ),
            "last_error": self.last_error,
        }


class PooledResponse(UpstreamResponse):
    """An answer from one instance of a pool, its first chunk already read; releasing it (read
    whole, finished or closed) gives the instance's slot back."""

    __slots__ = ("_first", "_instance", "_pool")

    def __init__(
        self, resp: aiohttp.ClientResponse, first: bytes, instance: Instance, pool: InstancePool
    ) -> None:
        super().__init__(resp)
        self._first: bytes | None = first
        self._instance: Instance | None = instance
        self._pool = pool

    def _release(self) -> None:
        if self._instance is not None:
            self._pool.release(self._instance)
            self._instance = None

    async def read(self) -> bytes:
        first, self._first = self._first or b"", None
        try:
            rest = await super().read()
        except Exception:
            self._failed_mid_answer()
            raise
        finally:
            self._release()
        return first + rest

    async def chunk(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            return await super().chunk()
        except Exception:
            self._failed_mid_answer()
            raise

    def _failed_mid_answer(self) -> None:
        if self._instance is not None:
            self._pool.mark_down(self._instance, "connection lost mid-answer")

    def close(self) -> None:
        super().close()
        self._release()

    async def finish(self) -> None:
        try:
            await super().finish()
        finally:
            self._release()


class InstancePool:
    """The instances serving one profile; see the module's docstring."""

    def __init__(
        self,
        base_urls: list[str],
        *,
        session: Callable[[], aiohttp.ClientSession],
        health_interval_s: float = 2.0,
        retry_max_s: float = 30.0,
        probe_timeout_s: float = 2.0,
    ) -> None:
        if not base_urls:
            raise ValueError("a pool needs at least one instance")
        self.instances = [Instance(url) for url in base_urls]
        self._session = session
        self.health_interval_s = health_interval_s
        self.retry_max_s = retry_max_s
        self.probe_timeout_s = probe_timeout_s
        self._next = 0  # round-robin among equally busy instances
        self.retries = 0  # requests answered by a second instance after the first failed
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        for inst in self.instances:
            UPSTREAM_INSTANCE_UP.labels(inst.base_url).set(1)
            UPSTREAM_INSTANCE_OUTSTANDING.labels(inst.base_url).set(0)

    @property
    def base_urls(self) -> list[str]:
        return [inst.base_url for inst in self.instances]

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- choice -------------------------------------------------------------------------------
    def pick(self, exclude: tuple[Instance, ...] = ()) -> Instance | None:
        """The healthy instance with the fewest outstanding requests (round-robin among equals);
        when every instance is out, the one due for its next probe soonest (a stale mark must
        not refuse a request that one of them could answer); None when all are excluded."""
        best: Instance | None = None
        n = len(self.instances)
        start = self._next
        for i in range(n):
            inst = self.instances[(start + i) % n]
            if (
                inst.healthy
                and inst not in exclude
                and (best is None or inst.outstanding < best.outstanding)
            ):
                best = inst
        if best is None:
            out = [inst for inst in self.instances if inst not in exclude]
            if not out:
                return None
            best = min(out, key=lambda inst: inst.retry_at)
        self._next = (self.instances.index(best) + 1) % n
        return best

    def acquire(self, inst: Instance) -> None:
        inst.outstanding += 1
        UPSTREAM_INSTANCE_OUTSTANDING.labels(inst.base_url).set(inst.outstanding)

    def release(self, inst: Instance) -> None:
        inst.outstanding -= 1
        UPSTREAM_INSTANCE_OUTSTANDING.labels(inst.base_url).set(inst.outstanding)

    # --- health -------------------------------------------------------------------------------
    def mark_down(self, inst: Instance, reason: str) -> None:
        """Take an instance out; the watcher probes it again after a backoff."""
        inst.last_error = reason
        inst.failures += 1
        delay = min(self.retry_max_s, 2.0 ** (inst.failures - 1))
        inst.retry_at = time.monotonic() + delay
        if inst.healthy:
            inst.healthy = False
            if inst._lost is not None and not inst._lost.done():
                inst._lost.set_result(None)  # requests waiting for its first byte go elsewhere
            inst.down_since = time.monotonic()
            inst.taken_out += 1
            UPSTREAM_INSTANCE_UP.labels(inst.base_url).set(0)
            log.warning(
                "model server instance taken out",
                instance=inst.base_url,
                reason=reason,
                retry_in_s=delay,
                healthy=sum(i.healthy for i in self.instances),
            )
        self._wake.set()

    def mark_up(self, inst: Instance) -> None:
        if not inst.healthy:
            log.info(
                "model server instance back",
                instance=inst.base_url,
                down_s=round(time.monotonic() - (inst.down_since or time.monotonic()), 3),
            )
            UPSTREAM_INSTANCE_UP.labels(inst.base_url).set(1)
        inst.healthy, inst.failures, inst.down_since, inst.last_error = True, 0, None, None

    async def probe(self, inst: Instance) -> bool:
        """`/health` answers 200 in time."""
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                async with self._session().get(f"{inst.root}/health") as resp:
                    await resp.read()
                    return resp.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def check(self, inst: Instance) -> None:
        if await self.probe(inst):
            self.mark_up(inst)
        elif inst.healthy or time.monotonic() >= inst.retry_at:
            self.mark_down(inst, "health check failed")

    async def _watch(self) -> None:
        """Probe healthy instances every `health_interval_s`, the ones out on their backoff."""
        next_round = 0.0
        while True:
            now = time.monotonic()
            due: list[Awaitable[None]] = []
            if now >= next_round:
                due += [self.check(i) for i in self.instances if i.healthy]
                next_round = now + self.health_interval_s
            due += [self.check(i) for i in self.instances if not i.healthy and now >= i.retry_at]
            if due:
                await asyncio.gather(*due)
            now = time.monotonic()
            wake_at = min(
                [next_round, *(i.retry_at for i in self.instances if not i.healthy)], default=now
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, wake_at - now)):
                    await self._wake.wait()

    # --- requests -----------------------------------------------------------------------------
    async def post(self, path: str, data: bytes, headers: dict[str, str]) -> UpstreamResponse:
        """POST to the least busy instance; one that fails before its first byte is taken out
        and the request goes once more to another. Failures are `UpstreamError`s."""
        tried: tuple[Instance, ...] = ()
        last: BaseException | None = None
        for _ in range(2 if len(self.instances) > 1 else 1):
            inst = self.pick(tried)
            if inst is None:
                break
            tried += (inst,)
            self.acquire(inst)
            attempt = asyncio.ensure_future(self._attempt(inst, path, data, headers))
            try:
                if inst.healthy:  # taken out meanwhile (its probe failed): go elsewhere now
                    await asyncio.wait((attempt, inst.lost()), return_when=FIRST_COMPLETED)
                else:
                    await asyncio.wait((attempt,))
            except BaseException:
                if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                    attempt.result()[0].close()
                attempt.cancel()  # its own cleanup closes the connection
                self.release(inst)
                raise
            if not attempt.done():
                attempt.cancel()
                try:
                    late, _ = await attempt
                    late.close()  # it answered just as it was given up: not used
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # we were cancelled too
                        self.release(inst)
                        raise
                except Exception:  # noqa: S110 (it failed as it was cancelled: moving on anyway)
                    pass
                self.release(inst)
                last = ConnectionError(f"instance taken out: {inst.last_error}")
                continue
            try:
                resp, first = attempt.result()
            except (aiohttp.ClientError, OSError) as exc:
                self.release(inst)
                last = exc
                continue
            except BaseException:
                self.release(inst)
                raise
            inst.served += 1
            if tried[:-1]:
                self.retries += 1
                UPSTREAM_RETRIES.inc()
                log.info(
                    "request retried on another instance",
                    failed=[i.base_url for i in tried[:-1]],
                    served_by=inst.base_url,
                )
            return PooledResponse(resp, first, inst, self)
        if isinstance(last, aiohttp.ClientConnectorError) or last is None:
            raise model_unavailable("connection refused by every instance tried")
        raise upstream_failed(f"{type(last).__name__} on every instance tried") from last

    async def _attempt(
        self, inst: Instance, path: str, data: bytes, headers: dict[str, str]
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """Send to one instance and read the answer's first chunk; a failure takes it out."""
        try:
            resp = await self._send(inst.url(path), data, headers)
        except _NOT_ANSWERED as exc:
            self.mark_down(inst, _reason(exc))
            raise
        try:
            first = await resp.content.readany() if resp.status == 200 else b""
            if resp.status == 200 and not first:
                raise aiohttp.ServerDisconnectedError("the answer ended before its first byte")
        except (aiohttp.ClientError, OSError):
            resp.close()
            self.mark_down(inst, "connection lost before the first byte")
            raise
        except BaseException:
            resp.close()
            raise
        return resp, first

    async def _send(self, url: URL, data: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
        http = self._session()
        try:
            return await http.post(url, data=data, headers=headers)
        except aiohttp.ClientConnectorError:
            raise
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # a pooled keep-alive connection the server had just closed: nothing was answered
            # on it, so sending once more to the same instance is safe (a dead instance then
            # refuses the new connection)
            return await http.post(url, data=data, headers=headers)

    # --- views --------------------------------------------------------------------------------
    def healthy_urls(self) -> list[str]:
        """Base URLs to ask for the model list: the healthy ones first."""
        ordered = sorted(self.instances, key=lambda i: not i.healthy)
        return [inst.base_url for inst in ordered]

    def view(self) -> list[dict[str, Any]]:
        return [inst.view() for inst in self.instances]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused"
    return f"no answer ({type(exc).__name__})"
