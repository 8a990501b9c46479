"""Relaying one chat completion from the model server to the client.

`ChatRelay` is an ASGI response. Headers go out only when the first upstream event has arrived,
so a failure before the first token is a real HTTP status (SPEC §3). After that, failures become
one `data: {"error": ...}` event and `data: [DONE]`. A watcher task on `receive()` cancels the
relay the moment the client leaves; the `finally` closes the upstream connection (vLLM then
aborts the generation) and hands the outcome to `on_finish` whatever happened.

Once `[DONE]` has been handed to the server the answer is complete: a client that leaves after
it (browsers and scripts do at once) no longer turns it into a 499. `stop()` ends an answer from
outside (graceful shutdown, the wall-clock limit) the same way an upstream failure mid-stream
does: the error event and `[DONE]`, or a plain error status before the first byte. A stream cut
before its end (client gone, stopped) has no usage chunk: its completion tokens are the content
events the gateway relayed, and the outcome says the count is the gateway's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.core.asgi import body_send
from app.core.errors import error_body, openai_status
from app.core.metrics import ACTIVE_STREAMS
from app.services.chat_request import ChatRequest
from app.services.upstream import (
    Answer,
    Endpoint,
    Sending,
    UpstreamClient,
    UpstreamError,
    error_detail,
    split_events,
    status_error,
    upstream_failed,
    upstream_timeout,
)

log = structlog.get_logger()

DONE_EVENT = b"data: [DONE]\n\n"
CLIENT_CLOSED = 499


def server_shutting_down() -> UpstreamError:
    return UpstreamError(
        "the gateway is shutting down: the answer was stopped, retry shortly",
        code="server_shutting_down",
        status_code=503,
        headers={"Retry-After": "5"},
    )


def answer_time_limit(limit_s: float) -> UpstreamError:
    return UpstreamError(
        f"the answer reached the time limit of {limit_s:g} s and was stopped",
        code="answer_time_limit",
        status_code=504,
    )


@dataclass(slots=True)
class StreamOutcome:
    status_code: int = 200
    error_code: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: int | None = None  # the first token of any kind: reasoning, answer or tool call
    answer_ttft_ms: int | None = None  # the first token of the answer itself
    latency_ms: int | None = None
    finish_reason: str | None = None
    text: list[str] = field(default_factory=list)  # the answer, collected in "ui" mode
    reasoning: list[str] = field(default_factory=list)  # the chain of thought, likewise
    relayed_tokens: int = 0  # content events relayed (one token each, as vLLM streams them)
    tokens_source: str | None = None  # "upstream" (the usage chunk) | "gateway" (counted)
    cut: bool = False  # ended before the model server's end: client gone, stopped

    def settle_tokens(self) -> None:
        """The usage chunk's counts when it came, else the gateway's count of what it relayed."""
        if self.completion_tokens is not None:
            self.tokens_source = "upstream"
        elif self.relayed_tokens:
            self.completion_tokens = self.relayed_tokens
            self.tokens_source = "gateway"

    def fail(self, err: UpstreamError | Exception, status: int | None = None) -> None:
        if isinstance(err, UpstreamError):
            self.status_code, self.error_code = err.status_code, err.code
        else:
            self.status_code, self.error_code = status or 502, "upstream_error"


def _body_of(err: UpstreamError, openai: bool) -> dict[str, Any]:
    if openai:
        return error_body(err.code, err.message, openai_for=err.status_code, param=err.param)
    return error_body(err.code, err.message)


def _error_event(err: UpstreamError, openai: bool) -> bytes:
    return b"data: " + orjson.dumps(_body_of(err, openai)) + b"\n\n" + DONE_EVENT


def _reasoning_of(delta: dict[str, Any]) -> Any:
    """vLLM's chain of thought: `reasoning` today, `reasoning_content` before v0.10."""
    value = delta.get("reasoning")
    return value if value is not None else delta.get("reasoning_content")


def _carries_token(payload: bytes) -> bool:
    """A relayed-untouched event with a non-empty piece of text: chat's `content`, the
    completions API's `text`, or a reasoning delta (one token each, as vLLM streams them).

    Unrolled (no loop, no key + b'"' per call): it runs for every event of every /v1 stream."""
    return (
        (b'"content":"' in payload and b'"content":""' not in payload)
        or (b'"text":"' in payload and b'"text":""' not in payload)
        or (b'"reasoning":"' in payload and b'"reasoning":""' not in payload)
        or (b'"reasoning_content":"' in payload and b'"reasoning_content":""' not in payload)
    )


def _before_first_byte(exc: BaseException, timeout_reason: str) -> UpstreamError:
    """What a failure before anything was sent to the client becomes (a plain HTTP error)."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return upstream_timeout(timeout_reason)
    return upstream_failed(type(exc).__name__)


class RelayRegistry:
    """The answers being relayed now, so that a graceful shutdown can end them in time."""

    def __init__(self) -> None:
        self.relays: set[ChatRelay] = set()
        self.stopping: UpstreamError | None = None

    def add(self, relay: ChatRelay) -> None:
        self.relays.add(relay)
        if self.stopping is not None:  # started after the stop: ended at once
            relay.stop(self.stopping)

    def stop_all(self, err: UpstreamError) -> int:
        """End every answer still running, and any started after this."""
        self.stopping = err
        relays = list(self.relays)
        for relay in relays:
            relay.stop(err)
        return len(relays)


class ChatRelay(Response):
    """Streams (or, with `stream: false`, fetches) one completion; an ASGI response."""

    def __init__(
        self,
        upstream: UpstreamClient,
        request: ChatRequest,
        *,
        ui: bool,
        flush_ms: int,
        first_token_timeout_s: float,
        idle_timeout_s: float,
        request_id: str | None,
        on_finish: Callable[[StreamOutcome], None],
        extra_headers: dict[str, str] | None = None,
        conversation_id: str | None = None,
        max_answer_s: float = 0.0,
        registry: RelayRegistry | None = None,
    ) -> None:
        self.background = None
        self.upstream = upstream
        self.request = request
        self.ui = ui
        self.flush_s = flush_ms / 1000 if ui else 0.0  # /v1 is never coalesced
        self.first_token_timeout_s = first_token_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.request_id = request_id
        self.on_finish = on_finish
        self.extra_headers = extra_headers or {}
        self.conversation_id = conversation_id
        self.outcome = StreamOutcome()
        self._started = 0.0
        self._first_event_pending = True
        # the open upstream response; closed in __call__'s finally unless fully read
        self._upstream: Answer | None = None
        self.max_answer_s = max_answer_s
        self.registry = registry
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False  # cancel the task once (client gone or stopped)
        self._stopped: UpstreamError | None = None
        self._response_started = False
        self._delivered = False  # the bytes ending with [DONE] were handed to the server
        self._pending: list[str] = []  # content deltas held back to merge (ui mode only)
        self._template: dict[str, Any] | None = None
        self._early: Sending | None = None  # start_early()

    async def start_early(self) -> None:
        """Send the request to the model server now, before this response is called (the rate
        limiter's verdict is still on its way); `abandon()` it if the request is refused."""
        self._early = await self.upstream.send(
            self.request.endpoint, orjson.dumps(self.request.body), self.request_id
        )

    def abandon(self) -> None:
        """The request was refused after `start_early`: drop it (vLLM aborts it)."""
        early, self._early = self._early, None
        if early is not None:
            early.close()

    def stop(self, err: UpstreamError) -> None:
        """End this answer now (shutdown, time limit): error event + [DONE], stored as cut."""
        if self._stopped is None and not self._delivered:
            self._stopped = err
            self._cancel()

    def _cancel(self) -> None:
        if self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    # --- ASGI entry ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._started = time.perf_counter()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        client_gone = False

        async def watch_disconnect() -> None:
            nonlocal client_gone
            while (await receive())["type"] != "http.disconnect":
                pass
            client_gone = True
            if not self._delivered:  # after [DONE] the answer is complete: nothing to cut
                self._cancel()

        watcher = asyncio.create_task(watch_disconnect())
        timer = None
        if self.max_answer_s > 0:
            timer = asyncio.get_running_loop().call_later(
                self.max_answer_s, self.stop, answer_time_limit(self.max_answer_s)
            )
        if self.registry is not None:
            self.registry.add(self)
        if self.request.stream:
            ACTIVE_STREAMS.inc()
        try:
            try:
                if self.request.stream:
                    await self._stream(send, body_send(scope, send))
                else:
                    await self._complete(send)
            except asyncio.CancelledError:
                if not self._cancelled:
                    raise  # cancelled by the server itself: propagate (the finally still records)
                while task.cancelling():
                    task.uncancel()
                if client_gone or self._stopped is None:
                    self._client_closed()
                else:
                    await self._end_stopped(send, self._stopped)
        except OSError:  # the client vanished while we were writing
            self._client_closed()
        except Exception:
            # a fault of the gateway itself: the client gets a 500 (or a cut stream), and the
            # usage row and the access log say so rather than the 200 an answer starts with
            if not self._delivered:
                self.outcome.status_code, self.outcome.error_code = 500, "internal_error"
                self.outcome.cut = self._response_started
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if self.registry is not None:
                self.registry.relays.discard(self)
            if self.request.stream:
                ACTIVE_STREAMS.dec()
            watcher.cancel()
            self.abandon()  # started early and never read (nothing else came first)
            if self._upstream is not None:
                self._upstream.close()  # drops the upstream connection: vLLM aborts the generation
            self.outcome.latency_ms = int((time.perf_counter() - self._started) * 1000)
            self.outcome.settle_tokens()
            self.on_finish(self.outcome)

    def _client_closed(self) -> None:
        if self._delivered:
            return  # [DONE] was handed over: the answer is complete whatever the client does
        self.outcome.status_code, self.outcome.error_code = CLIENT_CLOSED, "client_closed"
        self.outcome.cut = True

    async def _end_stopped(self, send: Send, err: UpstreamError) -> None:
        """`stop()`: a plain error before the first byte; after it the error event + [DONE]."""
        self.outcome.cut = self._response_started
        if not self._response_started:
            await self._send_error(send, err)
            return
        await self._end_with_error(send, err, self._pending, self._template)

    # --- helpers ------------------------------------------------------------------------------
    def _response_headers(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", content_type), (b"cache-control", b"no-cache")]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.extra_headers.items()]
        return headers

    async def _send_error(self, send: Send, err: UpstreamError) -> None:
        self.outcome.fail(err)
        body = orjson.dumps(_body_of(err, not self.ui))
        headers = self._response_headers(b"application/json")
        headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        status = openai_status(err.status_code) if not self.ui else err.status_code
        self._response_started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        self._delivered = True
        await send({"type": "http.response.body", "body": body})

    async def _post(self) -> Answer:
        early, self._early = self._early, None
        if early is not None:  # answer() cleans up after itself when it fails
            self._upstream = await early.answer()
        else:
            self._upstream = await self.upstream.post(
                self.request.endpoint, orjson.dumps(self.request.body), self.request_id
            )
        return self._upstream

    def _ttft(self, answer: bool = True) -> None:
        """A token arrived: the first of any kind, and (`answer`) the first of the answer."""
        if self.outcome.ttft_ms is None:
            self.outcome.ttft_ms = int((time.perf_counter() - self._started) * 1000)
        if answer and self.outcome.answer_ttft_ms is None:
            self.outcome.answer_ttft_ms = int((time.perf_counter() - self._started) * 1000)

    # --- non-streaming ------------------------------------------------------------------------
    async def _complete(self, send: Send) -> None:
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                resp = await self._post()
                raw = await resp.read()  # read whole: the connection goes back to the pool
                status = resp.status
                self._upstream = None
        except (TimeoutError, UpstreamError, OSError) as exc:
            await self._send_error(send, _before_first_byte(exc, "no answer in time"))
            return
        if status != 200:
            await self._send_error(send, status_error(status, raw, self.request.endpoint))
            return
        try:
            body = orjson.loads(raw)
            if self.request.endpoint is Endpoint.EMBEDDINGS:
                if not isinstance(body["data"], list):
                    raise TypeError("data")
                choice: dict[str, Any] = {}
                text, reasoning = "", None
            else:
                choice = body["choices"][0]
                message = choice.get("message")
                if isinstance(message, dict):  # chat; /v1/completions has `text`
                    text = message.get("content") or ""
                    reasoning = _reasoning_of(message)
                else:
                    text, reasoning = choice.get("text") or "", None
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            await self._send_error(send, upstream_failed("malformed completion"))
            return
        self._ttft()
        self.outcome.finish_reason = choice.get("finish_reason")
        if isinstance(text, str):
            self.outcome.text.append(text)
        if isinstance(reasoning, str) and reasoning:
            self.outcome.reasoning.append(reasoning)
        self._take_usage(body.get("usage"))
        if self.ui and self.conversation_id is not None:
            body["conversation_id"] = self.conversation_id
            raw = orjson.dumps(body)
        self._response_started = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._response_headers(b"application/json"),
            }
        )
        self._delivered = True  # uvicorn writes to the transport before its first suspension
        await send({"type": "http.response.body", "body": raw})

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.outcome.prompt_tokens = prompt
            if isinstance(completion, int):
                self.outcome.completion_tokens = completion

    # --- streaming ----------------------------------------------------------------------------
    async def _stream(self, send: Send, send_body: Send) -> None:
        """Relay the stream; the upstream response stays in `self._upstream` for the finally.
        The start message goes through `send` (the middlewares add their headers), the chunks
        through `send_body` (`app.core.asgi`: no middleware looks at them)."""
        buffer = b""
        events: list[bytes] = []
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                resp = await self._post()
                if resp.status != 200:
                    raw = await resp.read()
                    err = status_error(resp.status, raw, self.request.endpoint)
                    await self._send_error(send, err)
                    return
                while not events:
                    chunk = await resp.chunk()
                    if not chunk:
                        raise upstream_failed("the stream ended before the first token")
                    events, buffer = split_events(buffer + chunk)
        except (TimeoutError, UpstreamError, OSError) as exc:
            await self._send_error(send, _before_first_byte(exc, "no first token in time"))
            return

        headers = self._response_headers(b"text/event-stream; charset=utf-8")
        headers += [(b"x-accel-buffering", b"no")]
        pending = self._pending  # content deltas held back to merge (ui mode only)
        # the first events are turned into bytes before the start message goes, so that the
        # head and the first body leave back to back (a client then wakes once for both)
        try:
            try:
                out, done, self._template = self._process(events, pending, self._template)
            finally:  # the head goes whatever came of them, as it did when it went first
                self._response_started = True
                await send({"type": "http.response.start", "status": 200, "headers": headers})
        except UpstreamError as err:  # an error event among the first: after the head
            await self._end_with_error(send_body, err, pending, self._template)
            return
        send = send_body
        last_send = time.perf_counter()
        idle = _IdleWatch(self, self.idle_timeout_s)
        try:
            while True:
                template = self._template
                if pending and (done or time.perf_counter() - last_send >= self.flush_s):
                    out += _merged_event(template, pending)
                    pending.clear()
                if out:
                    # handed over with [DONE]: uvicorn writes before its first suspension
                    self._delivered = done
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    last_send = time.perf_counter()
                if done:
                    break
                if pending:  # wake up in time to send what is held back
                    wait = max(0.0, self.flush_s - (time.perf_counter() - last_send))
                    try:
                        async with asyncio.timeout(wait):
                            chunk = await idle.read(resp)
                    except TimeoutError:  # time to send what is held back
                        out = b""
                        continue
                else:
                    chunk = await idle.read(resp)
                if not chunk:
                    raise upstream_failed("the stream ended without [DONE]")
                events, buffer = split_events(buffer + chunk)
                out, done, self._template = self._process(events, pending, self._template)
        except UpstreamError as err:
            await self._end_with_error(send, err, pending, self._template)
            return
        finally:
            idle.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        await resp.finish()
        self._upstream = None  # fully read: the connection went back to the pool

    async def _end_with_error(
        self, send: Send, err: UpstreamError, pending: list[str], template: dict[str, Any] | None
    ) -> None:
        self.outcome.fail(err)
        tail = _merged_event(template, pending) if pending else b""
        pending.clear()
        self._delivered = True
        await send(
            {
                "type": "http.response.body",
                "body": tail + _error_event(err, not self.ui),
                "more_body": False,
            }
        )

    def _process(
        self, events: list[bytes], pending: list[str], template: dict[str, Any] | None
    ) -> tuple[bytes, bool, dict[str, Any] | None]:
        """Turn upstream events into bytes for the client; content deltas may go to `pending`."""
        parts: list[bytes] = []
        done = False
        for payload in events:
            if payload == b"[DONE]":
                done = True
                if pending:
                    parts.append(_merged_event(template, pending))
                    pending.clear()
                parts.append(DONE_EVENT)
                break
            if payload.startswith(b'{"error"'):
                detail = error_detail(payload)
                raise upstream_failed(f"error during generation: {detail}")
            if (
                not self.ui
                and self.outcome.answer_ttft_ms is not None
                and b'"usage"' not in payload
            ):
                parts.append(b"data: " + payload + b"\n\n")  # the /v1 fast path: bytes untouched
                if _carries_token(payload):
                    self.outcome.relayed_tokens += 1
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise upstream_failed("malformed event from the model server") from None
            forwarded, template = self._on_chunk(chunk, payload, pending, template)
            if forwarded is not None:
                parts.append(forwarded)
        return b"".join(parts), done, template

    def _on_chunk(
        self, chunk: Any, payload: bytes, pending: list[str], template: dict[str, Any] | None
    ) -> tuple[bytes | None, dict[str, Any] | None]:
        if not isinstance(chunk, dict):
            raise upstream_failed("malformed event from the model server")
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage is not None:
            self._take_usage(usage)
        if not choices:  # the usage-only chunk
            if not self.request.client_wants_usage:
                return None, template
            if pending:
                merged = _merged_event(template, pending)
                pending.clear()
                return merged + b"data: " + payload + b"\n\n", template
            return b"data: " + payload + b"\n\n", template
        choice = choices[0] if isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if not isinstance(delta, dict):  # /v1/completions streams `text`, not a delta
            delta = {"content": choice.get("text")} if "text" in choice else {}
        content = delta.get("content")
        reasoning = _reasoning_of(delta)
        if choice.get("finish_reason"):
            self.outcome.finish_reason = choice["finish_reason"]
        first_content = False
        if isinstance(reasoning, str) and reasoning:
            self._ttft(answer=False)
            self.outcome.relayed_tokens += 1  # reasoning tokens are completion tokens too
            if self.ui:
                self.outcome.reasoning.append(reasoning)
        elif delta.get("tool_calls"):
            self._ttft(answer=False)
        if isinstance(content, str) and content:
            first_content = self.outcome.answer_ttft_ms is None
            self._ttft()
            self.outcome.relayed_tokens += 1
            if self.ui:
                self.outcome.text.append(content)
        if not self.ui:
            if not self.request.client_wants_usage and "usage" in chunk:
                chunk.pop("usage")
                return b"data: " + orjson.dumps(chunk) + b"\n\n", template
            return b"data: " + payload + b"\n\n", template
        # ui mode: the first event carries the conversation id; plain content deltas may merge
        if self._first_event_pending:
            self._first_event_pending = False
            if self.conversation_id is not None:
                chunk["conversation_id"] = self.conversation_id
            return b"data: " + orjson.dumps(chunk) + b"\n\n", template
        plain = not choice.get("finish_reason") and set(delta) <= {"content"}
        if (
            isinstance(content, str)
            and content
            and plain
            and self.flush_s > 0
            and not first_content
        ):
            pending.append(content)
            return None, template or chunk
        if pending:
            merged = _merged_event(template, pending)
            pending.clear()
            return merged + b"data: " + payload + b"\n\n", template
        return b"data: " + payload + b"\n\n", template


class _IdleWatch:
    """The idle timeout between upstream reads with one timer per stream, not one per read
    (an `asyncio.timeout()` per read cost ~5 % of the loop at c32, issue 17): each read notes
    when it began; the timer, when it fires, re-arms itself for the current read's deadline,
    and cancels the task only when a read has been waiting `idle_s` (never during a write to
    the client). The cancellation comes out of `read` as the `upstream_timeout` error."""

    __slots__ = ("_fired", "_handle", "_idle_s", "_loop", "_reading", "_relay", "_since")

    def __init__(self, relay: ChatRelay, idle_s: float) -> None:
        self._relay = relay
        self._idle_s = idle_s
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()
        self._reading = False
        self._fired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._since + idle_s, self._check
        )

    def _check(self) -> None:
        self._handle = None
        if not self._reading:  # a write to the client: the next read arms the timer again
            return
        due = self._since + self._idle_s
        if self._loop.time() < due:  # reads went on since it was armed: wait for this one's
            self._handle = self._loop.call_at(due, self._check)
            return
        task = self._relay._task
        if task is not None and not self._relay._cancelled:
            self._fired = True
            task.cancel()

    async def read(self, resp: Answer) -> bytes:
        self._since = self._loop.time()
        self._reading = True
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._idle_s, self._check)
        try:
            return await resp.chunk()
        except asyncio.CancelledError:
            task = self._relay._task
            if self._fired and not self._relay._cancelled and task is not None:
                self._fired = False
                task.uncancel()
                raise upstream_timeout("no data between chunks in time") from None
            raise
        finally:
            self._reading = False

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _merged_event(template: dict[str, Any] | None, pending: list[str]) -> bytes:
    """One chunk carrying several content deltas (the first token is never held back)."""
    base = template or {"object": "chat.completion.chunk"}
    chunk = {k: v for k, v in base.items() if k not in ("choices", "usage", "conversation_id")}
    chunk["choices"] = [
        {
            "index": 0,
            "delta": {"content": "".join(pending)},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
