"""``POST /v1/chat/completions``: validation like vLLM, answers, pacing and faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson

from simulator import rich
from simulator.answers import Answer, choose_answer, count_prompt_tokens
from simulator.config import Runtime, Settings
from simulator.faults import FaultSpec, FaultSpecError, directives_in, parse_spec
from simulator.httpproto import Connection, Request
from simulator.stats import Stats
from simulator.validation import BadRequest, validate
from simulator.wire import DONE, Frames, completion_body, error_body, sse_body


@dataclass(slots=True)
class Plan:
    stream: bool
    include_usage: bool
    answer: Answer
    finish_reason: str
    prompt_tokens: int
    ttft: float
    itl: float
    fault: FaultSpec
    extra_headers: bytes
    received: float = 0.0  # time.monotonic() when the request arrived


class ChatCompletions:
    def __init__(self, settings: Settings, runtime: Runtime, stats: Stats) -> None:
        self.settings = settings
        self.runtime = runtime
        self.stats = stats
        self._model_json = orjson.dumps(settings.model)

    # ------------------------------------------------------------------------ entry point
    def __call__(self, request: Request, conn: Connection) -> Coroutine[Any, Any, None] | None:
        stats = self.stats
        received = time.monotonic()
        request_id = request.header(b"x-request-id")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            stats.record(
                request.body.decode("utf-8", "replace"), request_id, request.header(b"traceparent")
            )
            self._reject(conn, 400, f"JSON decode error: {exc}")
            return None
        stats.record(body, request_id, request.header(b"traceparent"))
        try:
            plan = self._plan(body, request, request_id)
        except BadRequest as exc:
            self._reject(conn, exc.status, exc.message, exc.param)
            return None
        fault = plan.fault
        if fault.fail is not None:
            self._reject(conn, fault.fail, f"Simulated failure (fail={fault.fail}).")
            return None
        runtime = self.runtime
        if runtime.fail_rate > 0 and runtime.rng.random() < runtime.fail_rate:
            self._reject(conn, 500, "Simulated engine failure (fail_rate).")
            return None
        plan.received = received
        stats.prompt_tokens_total += plan.prompt_tokens
        stats.prefix_lookup(body.get("messages"), plan.prompt_tokens)
        if rich.wants_rich(body, runtime.reasoning):
            return self._rich(conn, plan, body)
        if plan.ttft > 0 or plan.itl > 0 or fault.disrupts:
            return self._stream(conn, plan) if plan.stream else self._whole(conn, plan)
        # Fast path: no pacing, no faults; answer in a single write.
        answer = plan.answer
        if plan.stream:
            body = sse_body(
                self._model_json, answer, plan.finish_reason, plan.prompt_tokens, plan.include_usage
            )
            conn.send_stream(body, plan.extra_headers)
        else:
            body = completion_body(
                self.settings.model, answer, plan.finish_reason, plan.prompt_tokens
            )
            conn.send(200, body, headers=plan.extra_headers)
        stats.ttft.observe(time.monotonic() - received)
        self._finished(plan, len(plan.answer.tokens))
        return None

    def _reject(
        self, conn: Connection, status: int, message: str, param: str | None = None
    ) -> None:
        self.stats.failed_total += 1
        conn.send(status, error_body(status, message, param))

    def _finished(self, plan: Plan, tokens: int) -> None:
        stats = self.stats
        stats.e2e_latency.observe(time.monotonic() - plan.received)
        stats.completed_total += 1
        stats.generation_tokens_total += tokens
        if plan.finish_reason == "length":
            stats.finished_length += 1
        else:
            stats.finished_stop += 1

    # ---------------------------------------------------------------------------- plan
    def _plan(self, body: Any, request: Request, request_id: str | None) -> Plan:
        checked = validate(body, self.settings.model, self.settings.max_model_len)
        fault = self._fault(request, checked.last_user)
        runtime = self.runtime
        tokens = fault.tokens if fault.tokens is not None else runtime.tokens
        full = choose_answer(checked.last_user, tokens, checked.first_system)
        answer = full.truncated(checked.max_tokens)
        ttft = fault.ttft_ms if fault.ttft_ms is not None else runtime.ttft_ms
        itl = fault.itl_ms if fault.itl_ms is not None else runtime.itl_ms
        return Plan(
            stream=checked.stream,
            include_usage=checked.include_usage,
            answer=answer,
            finish_reason="length" if answer is not full else "stop",
            prompt_tokens=checked.prompt_tokens,
            ttft=ttft / 1000.0,
            itl=itl / 1000.0,
            fault=fault,
            extra_headers=b"" if request_id is None else request.headers_line(b"x-request-id"),
        )

    def _fault(self, request: Request, last_user: str) -> FaultSpec:
        spec = self.runtime.fault_spec
        try:
            in_message = directives_in(last_user)
            if in_message is not None:
                spec = spec.merged(in_message)
            header = request.header(b"x-sim-fault")
            if header is not None:
                spec = spec.merged(parse_spec(header))
        except FaultSpecError as exc:
            raise BadRequest(400, f"Invalid simulator fault: {exc}") from None
        return spec

    # ---------------------------------------------------------------------- paced answers
    async def _stream(self, conn: Connection, plan: Plan) -> None:
        stats = self.stats
        fault = plan.fault
        encoded = plan.answer.encoded
        count = len(encoded)
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        kv = plan.prompt_tokens + count
        stats.active_requests += 1
        stats.active_streams += 1
        stats.kv_tokens_in_use += kv
        try:
            conn.start_stream(plan.extra_headers)
            if fault.hang_first:
                await _forever()
            frames = Frames(self._model_json)
            for index in range(count + 1):
                if fault.drop_after is not None and index >= fault.drop_after:
                    await conn.flush_and_abort()
                    stats.dropped_total += 1
                    return
                if fault.hang_after is not None and index >= fault.hang_after:
                    await _forever()
                if index == count:
                    break
                delay = start + plan.ttft + index * plan.itl - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                last = index == count - 1
                chunk = frames.token(encoded[index], plan.finish_reason if last else None)
                if index == 0:
                    conn.write_chunk(frames.role() + chunk)
                    stats.ttft.observe(time.monotonic() - plan.received)
                else:
                    conn.write_chunk(chunk)
                sent += 1
                await conn.drain()
            tail = DONE
            if plan.include_usage:
                tail = frames.usage(plan.prompt_tokens, count) + DONE
            conn.end_stream(tail)
            self._finished(plan, 0)  # the tokens are counted as sent, below
        except asyncio.CancelledError:
            stats.aborted_total += 1
            raise
        except ConnectionError:
            stats.aborted_total += 1
        finally:
            stats.generation_tokens_total += sent
            stats.active_requests -= 1
            stats.active_streams -= 1
            stats.kv_tokens_in_use -= kv

    async def _whole(self, conn: Connection, plan: Plan) -> None:
        stats = self.stats
        fault = plan.fault
        count = len(plan.answer.tokens)
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def until_token(k: int) -> None:
            """Wait until the k-th token (1-based) would have been generated."""
            if k > 0:
                delay = start + plan.ttft + (k - 1) * plan.itl - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)

        kv = plan.prompt_tokens + count
        stats.active_requests += 1
        stats.kv_tokens_in_use += kv
        try:
            if fault.hang_first:
                await _forever()
            stops = [s for s in (fault.drop_after, fault.hang_after) if s is not None]
            if stops and min(stops) <= count:
                await until_token(min(stops))
                if fault.drop_after is not None and fault.drop_after == min(stops):
                    conn.abort()
                    stats.dropped_total += 1
                    return
                await _forever()
            await until_token(count)
            body = completion_body(
                self.settings.model, plan.answer, plan.finish_reason, plan.prompt_tokens
            )
            conn.send(200, body, headers=plan.extra_headers)
            stats.ttft.observe(time.monotonic() - plan.received)
            self._finished(plan, count)
        except asyncio.CancelledError:
            stats.aborted_total += 1
            raise
        except ConnectionError:
            stats.aborted_total += 1
        finally:
            stats.active_requests -= 1
            stats.kv_tokens_in_use -= kv

    # ------------------------------------------------------------ reasoning, tools, n, logprobs
    def _rich(
        self, conn: Connection, plan: Plan, body: dict[str, Any]
    ) -> Coroutine[Any, Any, None] | None:
        n = body.get("n") or 1
        answer = rich.tool_answer(body) or plan.answer
        top = body.get("top_logprobs")
        full = rich.RichAnswer(
            model=self.settings.model,
            answer=answer,
            finish_reason=plan.finish_reason,
            prompt_tokens=plan.prompt_tokens,
            reasoning_field=self.runtime.reasoning,
            tool=rich.tool_call_for(body),
            n=n,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=top if isinstance(top, int) and not isinstance(top, bool) else 0,
        )
        tokens = full.completion_tokens()
        if not plan.stream:
            conn.send(200, full.body(), headers=plan.extra_headers)
            self.stats.ttft.observe(time.monotonic() - plan.received)
            self._finished(plan, tokens)
            return None
        return self._paced(conn, plan, full.events(plan.include_usage), tokens)

    async def _paced(self, conn: Connection, plan: Plan, events: list[bytes], tokens: int) -> None:
        """Send prepared events at the configured pace (first after `ttft`, then `itl` apart)."""
        stats = self.stats
        loop = asyncio.get_running_loop()
        start = loop.time()
        kv = plan.prompt_tokens + tokens
        stats.active_requests += 1
        stats.active_streams += 1
        stats.kv_tokens_in_use += kv
        try:
            conn.start_stream(plan.extra_headers)
            for index, event in enumerate(events):
                delay = start + plan.ttft + index * plan.itl - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                conn.write_chunk(event)
                if index == 0:
                    stats.ttft.observe(time.monotonic() - plan.received)
                await conn.drain()
            conn.end_stream(DONE)
            self._finished(plan, tokens)
        except asyncio.CancelledError:
            stats.aborted_total += 1
            raise
        except ConnectionError:
            stats.aborted_total += 1
        finally:
            stats.active_requests -= 1
            stats.active_streams -= 1
            stats.kv_tokens_in_use -= kv

    # ------------------------------------------------------------------- /v1/completions
    def completions(self, request: Request, conn: Connection) -> Coroutine[Any, Any, None] | None:
        body = self._json(request, conn)
        if body is None:
            return None
        prompts = rich.completion_prompts(body.get("prompt"))
        if prompts is None:
            self._reject(
                conn, 400, "prompt must be a string, token ids or a list of them", "prompt"
            )
            return None
        model = body.get("model")
        if model is not None and model != self.settings.model:
            self._reject(conn, 404, f"The model `{model}` does not exist.", "model")
            return None
        max_tokens = body.get("max_tokens")
        limit = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 16
        full = choose_answer(prompts[0], self.runtime.tokens)
        answer = full.truncated(limit)
        finish = "length" if answer is not full else "stop"
        n_field = body.get("n")
        n = n_field if isinstance(n_field, int) and n_field > 0 else 1
        count = n * len(prompts)
        prompt_tokens = count_prompt_tokens([{"content": p} for p in prompts])
        self.stats.prompt_tokens_total += prompt_tokens
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and bool(options.get("include_usage"))
        plan = Plan(
            stream=stream,
            include_usage=include_usage,
            answer=answer,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            ttft=self.runtime.ttft_ms / 1000.0,
            itl=self.runtime.itl_ms / 1000.0,
            fault=FaultSpec(),
            extra_headers=b"",
        )
        tokens = len(answer.tokens) * count
        if not stream:
            body_out = rich.completion_body(
                self.settings.model, answer, finish, prompt_tokens, count
            )
            conn.send(200, body_out)
            self._finished(plan, tokens)
            return None
        events = rich.completion_events(
            self.settings.model, answer, finish, prompt_tokens, count, include_usage
        )
        return self._paced(conn, plan, events, tokens)

    # -------------------------------------------------------------------- /v1/embeddings
    def embeddings(self, request: Request, conn: Connection) -> None:
        if not self.runtime.embeddings:  # vLLM registers the route for pooling models only
            conn.send(404, b'{"detail":"Not Found"}')
            return
        body = self._json(request, conn)
        if body is None:
            return
        texts = rich.completion_prompts(body.get("input"))
        if texts is None:
            self._reject(conn, 400, "input must be a string, token ids or a list of them", "input")
            return
        model = body.get("model")
        if model is not None and model != self.settings.model:
            self._reject(conn, 404, f"The model `{model}` does not exist.", "model")
            return
        dimensions = body.get("dimensions")
        if dimensions is None:
            dimensions = rich.EMBEDDING_SIZE
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            self._reject(conn, 400, "dimensions must be a positive integer", "dimensions")
            return
        if dimensions > rich.EMBEDDING_SIZE:
            # as vLLM: a vector is never longer than the model's (and building a huge one
            # would stall this single-threaded server for every other test)
            self._reject(
                conn,
                400,
                f"dimensions must be at most {rich.EMBEDDING_SIZE} for this model",
                "dimensions",
            )
            return
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            self._reject(conn, 400, "encoding_format must be float or base64", "encoding_format")
            return
        prompt_tokens = count_prompt_tokens([{"content": t} for t in texts])
        self.stats.prompt_tokens_total += prompt_tokens
        self.stats.completed_total += 1
        conn.send(
            200,
            rich.embeddings_body(self.settings.model, texts, dimensions, encoding, prompt_tokens),
        )

    def _json(self, request: Request, conn: Connection) -> dict[str, Any] | None:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            self._reject(conn, 400, f"JSON decode error: {exc}")
            return None
        self.stats.record(body, request.header(b"x-request-id"))
        if not isinstance(body, dict):
            self._reject(conn, 400, "The request body must be a JSON object.")
            return None
        return body


async def _forever() -> None:
    """Hang until cancelled (the client disconnects or the server stops)."""
    await asyncio.get_running_loop().create_future()
