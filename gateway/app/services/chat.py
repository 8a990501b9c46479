"""Chat completions: validate, resolve the model, persist, relay, record usage.

One instance lives on app.state (built in the lifespan) and serves both `/api/chat` (the UI:
conversations, coalesced stream) and `/v1/chat/completions` (API clients: bytes as vLLM sent them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from app.core.config import Settings
from app.core.errors import AppError, DatabaseUnavailable, is_database_outage, openai_status
from app.core.metrics import (
    CHAT_ANSWER_TTFT,
    CHAT_REQUESTS,
    CHAT_TTFT,
    TOKENS,
    UPSTREAM_ERRORS,
)
from app.model_manager.gate import ServingGate
from app.services.auth import Principal
from app.services.chat_request import (
    ChatRequest,
    GenerationBounds,
    answer_count,
    bound_generation,
    message_text,
    openai_request,
    parse_json_object,
    ui_request,
)
from app.services.chat_store import ChatStore, Exchange, good_title, split_think
from app.services.chat_stream import (
    CLIENT_CLOSED,
    ChatRelay,
    RelayRegistry,
    StreamOutcome,
    server_shutting_down,
)
from app.services.rate_limiter import Admission, AdmitTicket, RateLimiter
from app.services.upstream import Endpoint, ServedModel, UpstreamClient, UpstreamError
from app.services.usage_recorder import UsageRecord, UsageRecorder

if TYPE_CHECKING:
    from app.model_manager.profiles import ModelProfile

log = structlog.get_logger()

TITLE_PROMPT = (
    "Write a short title (at most 6 words) for a conversation that starts with the user's "
    "message below. Answer with the title only, in the language of the message."
)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        upstream: UpstreamClient,
        store: ChatStore,
        recorder: UsageRecorder,
        limiter: RateLimiter,
        *,
        gate: ServingGate | None = None,
        profile_for: Callable[[str], ModelProfile | None] | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate or ServingGate()
        self.upstream = upstream
        self.store = store
        self.recorder = recorder
        self.limiter = limiter
        self.profile_for = profile_for
        self._background: set[asyncio.Task[None]] = set()
        self.relays = RelayRegistry()  # answers being relayed now (graceful shutdown ends them)

    def stop_streams(self) -> int:
        """Graceful shutdown: end every answer still running, stored as cut; returns how many."""
        return self.relays.stop_all(server_shutting_down())

    def client_left(
        self, principal: Principal, *, ui: bool, request_id: str | None, log_fields: dict[str, Any]
    ) -> None:
        """The client went away before its request was even read: its one usage row, a 499."""
        log_fields["status_code"] = CLIENT_CLOSED
        log_fields["error_code"] = "client_closed"
        self._record(
            principal, None, None, ui, request_id, status=CLIENT_CLOSED, error="client_closed"
        )

    def _bounds(self, model: ServedModel) -> GenerationBounds:
        profile = self.profile_for(model.id) if self.profile_for is not None else None
        if profile is None:  # nothing managed: the settings give the bounds
            return GenerationBounds(
                {}, self.settings.chat_default_max_tokens, self.settings.chat_max_tokens_ceiling
            )
        ceiling = profile.max_tokens_ceiling or profile.max_model_len
        default = profile.sampling.get("max_tokens") or min(
            self.settings.chat_default_max_tokens, ceiling
        )
        return GenerationBounds(dict(profile.sampling), int(default), ceiling)

    # --- entry points -------------------------------------------------------------------------
    async def completion(
        self,
        principal: Principal,
        raw_body: bytes,
        *,
        ui: bool,
        request_id: str | None,
        log_fields: dict[str, Any],
        endpoint: Endpoint = Endpoint.CHAT,
    ) -> ChatRelay:
        """Everything up to the first byte to the model server; errors here are plain 4xx/5xx.

        The rate limiter's verdict is asked for first. Where the limiter allows it (the user
        was admitted with room to spare: `AdmitTicket.overlap`), an API request goes on to the
        model server while the verdict is on its way, and the relay is handed back only once it
        is in: a refused request is cancelled before anything of it reaches the client, and an
        admitted one does not wait one Redis round trip more for its first token."""
        model: ServedModel | None = None
        conversation_id = None
        ticket = self.limiter.begin(principal)
        admission: Admission | None = None
        entered = False
        member_gate: ServingGate | None = None  # another member of the set's (fleet.py)
        relay: ChatRelay | None = None
        try:
            if not ticket.overlap:
                admission = await self.limiter.settle(ticket)
            body = parse_json_object(raw_body)
            # during a model switch: wait for the new model (or 503 model_switching)
            await self.gate.enter(self.settings.switch_wait_s)
            entered = True
            if ui:
                if admission is None:  # nothing is stored for a request that is refused
                    admission = await self.limiter.settle(ticket)
                model, unavailable = await self._resolve_for_ui(body.get("model"))
                req = ui_request(body, model, self.settings)
                exchange = await self._begin(principal.user_id, req, model.id)
                conversation_id = exchange.conversation_id
                if unavailable is not None:
                    raise unavailable  # the question is stored; the model server is not there
                if exchange.system_prompt:
                    req.messages.insert(0, {"role": "system", "content": exchange.system_prompt})
            else:
                model = await self.upstream.resolve(body.get("model"))
                req = openai_request(body, model, self.settings, endpoint)
                exchange = Exchange(None, None, False, None)
            if model.client is not None and model.client.member_gate is not None:
                # several models at once: a switch of this model's member drains it too
                await model.client.member_gate.enter(self.settings.switch_wait_s)
                member_gate = model.client.member_gate
            bound = bound_generation(req, self._bounds(model), model, self.settings)
            if admission is not None:
                # every answer asked for (`n`, several prompts) may run to the bound
                await self.limiter.reserve(admission, bound * answer_count(req))
            relay = self._relay(principal, model, exchange, req, ui, request_id, log_fields, ticket)
            if admission is None:  # overlap (never with a token budget: nothing to reserve)
                await relay.start_early()
                admission = await self.limiter.settle(ticket)
        except AppError as exc:
            err = exc
            self._back_out(relay, entered, member_gate)
            if admission is None:  # the verdict comes first: a refusal is the answer
                try:
                    admission = await self.limiter.settle(ticket)
                except AppError as refusal:
                    err = refusal
                except BaseException:  # cancelled meanwhile: what it took goes back later
                    self.spawn(self._release_unused(ticket))
                    raise
            if admission is not None:
                self.limiter.release_soon(admission, None)
                err.headers = {**admission.headers, **err.headers}
            if conversation_id is not None:  # the question is stored: a retry continues it
                err.headers["X-Conversation-ID"] = conversation_id
            self._record(
                principal,
                model,
                conversation_id,
                ui,
                request_id,
                status=err.status_code if ui else openai_status(err.status_code),  # as answered
                error=err.code,
            )
            if err is exc:
                raise
            raise err from exc
        except BaseException:  # a database outage in store.begin, a cancelled request, ...
            self._back_out(relay, entered, member_gate)
            # its stream slot and token reservation go back (once the verdict is in)
            self.spawn(self._release_unused(ticket))
            raise
        relay.extra_headers.update(admission.headers)
        return relay

    def _back_out(
        self, relay: ChatRelay | None, entered: bool, member_gate: ServingGate | None
    ) -> None:
        """What a request that will not run holds: the request sent early, the gates."""
        if relay is not None:
            relay.abandon()
        if entered:
            self.gate.leave()
        if member_gate is not None:
            member_gate.leave()

    async def _release_unused(self, ticket: AdmitTicket) -> None:
        """What an admitted request that never ran took goes back (its verdict first, if it
        is still on its way: settling an admitted ticket again gives its admission)."""
        try:
            admission = await self.limiter.settle(ticket)
        except AppError:
            return  # refused: it holds nothing
        self.limiter.release_soon(admission, None)

    def _relay(
        self,
        principal: Principal,
        model: ServedModel,
        exchange: Exchange,
        req: ChatRequest,
        ui: bool,
        request_id: str | None,
        log_fields: dict[str, Any],
        ticket: AdmitTicket,
    ) -> ChatRelay:
        log_fields["model"] = model.id
        if self.settings.log_content and req.messages:  # user data: off unless LOG_CONTENT=true
            log_fields["prompt"] = message_text(req.messages[-1].get("content"))
        headers: dict[str, str] = {}
        if exchange.conversation_id is not None:
            headers["X-Conversation-ID"] = exchange.conversation_id
        member_gate = model.client.member_gate if model.client is not None else None

        def on_finish(outcome: StreamOutcome) -> None:
            self.gate.leave()
            if member_gate is not None:
                member_gate.leave()
            self._finish(principal, model, exchange, ui, request_id, outcome, log_fields)
            tokens = (outcome.prompt_tokens or 0) + (outcome.completion_tokens or 0)
            if ticket.admission is not None:  # admitted before the relay could run
                self.limiter.release_soon(ticket.admission, tokens)

        return ChatRelay(
            model.client or self.upstream,  # several models at once: the server of this one
            req,
            ui=ui,
            flush_ms=self.settings.stream_flush_ms,
            first_token_timeout_s=self.settings.upstream_first_token_timeout_s,
            idle_timeout_s=self.settings.upstream_idle_timeout_s,
            request_id=request_id,
            on_finish=on_finish,
            extra_headers=headers,
            conversation_id=exchange.conversation_id,
            max_answer_s=self.settings.chat_max_answer_s if ui else 0.0,
            registry=self.relays,
        )

    async def _begin(self, user_id: int, req: ChatRequest, model_id: str) -> Exchange:
        """`store.begin`, with a database outage as the AppError it is (503 database_unavailable),
        so the refusal gets its usage row like every other one (the recorder retries it)."""
        try:
            return await self.store.begin(user_id, req, model_id)
        except Exception as exc:
            if is_database_outage(exc):
                raise DatabaseUnavailable() from exc
            raise

    def record_refusal(self, ui: bool, request_id: str | None, err: AppError) -> None:
        """A chat request refused before its caller was known (a database outage while
        resolving the credential): its usage row, without a user."""
        CHAT_REQUESTS.labels("unknown", "ui" if ui else "api", str(err.status_code)).inc()
        self.recorder.record(
            UsageRecord(
                status_code=err.status_code,
                request_id=request_id,
                client="ui" if ui else "api",
                error_code=err.code,
            )
        )

    async def _resolve_for_ui(self, requested: Any) -> tuple[ServedModel, UpstreamError | None]:
        """The served model; when the model server cannot be reached, a stand-in and the error,
        so the user's message is still stored before the 503 (it is never lost)."""
        try:
            return await self.upstream.resolve(requested), None
        except UpstreamError as err:
            name = requested if isinstance(requested, str) and requested else "current"
            return ServedModel(id=name, max_model_len=None, created=0, owned_by=""), err

    async def list_models(self) -> list[ServedModel]:
        return await self.upstream.all_models()

    # --- after the answer ---------------------------------------------------------------------
    def _finish(
        self,
        principal: Principal,
        model: ServedModel,
        exchange: Exchange,
        ui: bool,
        request_id: str | None,
        outcome: StreamOutcome,
        log_fields: dict[str, Any],
    ) -> None:
        """Runs in the relay's `finally`: synchronous, never raises, defers every write."""
        self._record(
            principal,
            model,
            exchange.conversation_id,
            ui,
            request_id,
            status=outcome.status_code,
            error=outcome.error_code,
            outcome=outcome,
        )
        log_fields.update(
            status_code=outcome.status_code,
            ctx_len=outcome.prompt_tokens,
            input_tokens=outcome.prompt_tokens,
            output_tokens=outcome.completion_tokens,
            ttft_ms=outcome.ttft_ms,
            answer_ttft_ms=outcome.answer_ttft_ms,
        )
        if outcome.error_code:
            log_fields["error_code"] = outcome.error_code
        if self.settings.log_content and outcome.text:  # /v1 answers are relayed, not assembled
            log_fields["completion"] = "".join(outcome.text)
        if exchange.conversation_id is None:
            return
        self.spawn(
            self.store.finish(
                exchange.conversation_id, outcome, model.id, variant=exchange.regenerate
            )
        )
        if exchange.needs_title and exchange.question and outcome.status_code == 200:
            answer = "".join(outcome.text)
            self.spawn(self._title(exchange.conversation_id, exchange.question, answer))

    def _record(
        self,
        principal: Principal,
        model: ServedModel | None,
        conversation_id: str | None,
        ui: bool,
        request_id: str | None,
        *,
        status: int,
        error: str | None,
        outcome: StreamOutcome | None = None,
    ) -> None:
        model_label = model.id if model else "unknown"
        CHAT_REQUESTS.labels(model_label, "ui" if ui else "api", str(status)).inc()
        if error is not None and status >= 500 and error != "client_closed":
            UPSTREAM_ERRORS.labels(error).inc()
        if outcome is not None:
            if outcome.ttft_ms is not None:
                CHAT_TTFT.labels(model_label).observe(outcome.ttft_ms / 1000)
            if outcome.answer_ttft_ms is not None:
                CHAT_ANSWER_TTFT.labels(model_label).observe(outcome.answer_ttft_ms / 1000)
            if outcome.prompt_tokens:
                TOKENS.labels(model_label, "input").inc(outcome.prompt_tokens)
            if outcome.completion_tokens:
                TOKENS.labels(model_label, "output").inc(outcome.completion_tokens)
        self.recorder.record(
            UsageRecord(
                status_code=status,
                user_id=principal.user_id,
                request_id=request_id,
                conversation_id=conversation_id,
                model=model.id if model else None,
                profile=(model.client or self.upstream).serving_profile() if model else None,
                client="ui" if ui else "api",
                prompt_tokens=outcome.prompt_tokens if outcome else None,
                completion_tokens=outcome.completion_tokens if outcome else None,
                tokens_source=outcome.tokens_source if outcome else None,
                ttft_ms=outcome.ttft_ms if outcome else None,
                answer_ttft_ms=outcome.answer_ttft_ms if outcome else None,
                latency_ms=outcome.latency_ms if outcome else None,
                error_code=error,
            )
        )

    async def _title(self, conversation_id: str, question: str, answer: str) -> None:
        """The question's first words are already the title; a good generated one replaces them."""
        raw = await self._generate_title(question)
        title = good_title(raw, question, answer) if raw is not None else None
        if title is None:
            log.info("generated title not used", conversation_id=conversation_id)
            return
        await self.store.replace_fallback_title(conversation_id, question, title)

    async def _generate_title(self, question: str) -> str | None:
        body = {
            "model": (await self.upstream.resolve(None)).id,
            "messages": [
                {"role": "system", "content": TITLE_PROMPT},
                {"role": "user", "content": question[:2000]},
            ],
            "max_tokens": 24,
            "temperature": 0.2,
            "stream": False,
        }
        try:
            async with asyncio.timeout(20):
                resp = await self.upstream.post(Endpoint.CHAT, orjson.dumps(body))
                raw = await resp.read()
                if resp.status != 200:
                    return None
                data = orjson.loads(raw)
            # a reasoning model without vLLM's parser thinks inline first: the title follows
            return split_think(str(data["choices"][0]["message"]["content"] or ""))[1]
        except Exception as exc:  # a title is a nicety: any failure falls back to the question
            log.info("title generation failed", error=type(exc).__name__)
            return None

    # --- background work ----------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("background chat write failed")

    async def drain(self, limit_s: float = 15.0) -> None:
        """Wait for answers and titles still being written (graceful shutdown)."""
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=limit_s)
            if pending:
                log.error("background chat writes abandoned at shutdown", count=len(pending))
