"""The model server as the gateway sees it: one pooled aiohttp session, the served model, and the
mapping of transport failures to the SPEC's statuses.

aiohttp rather than httpx on this path: the chat relay is the hot path (issue 3's figures) and
aiohttp's client costs a fraction of httpx's per request and per chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from app.core.config import Settings
from app.core.errors import AppError, NotFound, ValidationFailed

log = structlog.get_logger()


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


class UpstreamClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = settings.vllm_base_url.rstrip("/")
        self.chat_url = URL(f"{self.base_url}/chat/completions")  # parsed once, not per request
        self._urls: dict[str, URL] = {}
        self.session: aiohttp.ClientSession | None = None
        self._models: list[ServedModel] | None = None
        self._models_at = 0.0
        self._models_lock = asyncio.Lock()
        self._aliases = {a.strip().lower() for a in settings.model_aliases if a.strip()}
        # the serving profile's id and aliases (set by the model manager): names of the served
        # model a request may use besides its id
        self.profile_names: Callable[[], Iterable[str]] = tuple

    def retarget(self, base_url: str) -> None:
        """Send requests to another model server (a switch to an external profile)."""
        self.base_url = base_url.rstrip("/")
        self.chat_url = URL(f"{self.base_url}/chat/completions")
        self._urls.clear()
        self.forget_models()

    def url(self, path: str) -> URL:
        """The model server's URL for a path under its `/v1` (parsed once per target)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(f"{self.base_url}/{path}")
        return url

    async def start(self) -> None:
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

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def renew_pool(self) -> None:
        """The model server was replaced: its pooled keep-alive connections are dead, so start
        a fresh pool rather than find that out request by request."""
        old = self.session
        await self.start()
        self.forget_models()
        if old is not None:
            await old.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "UpstreamClient.start() not called"
        return self.session

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
        try:
            async with asyncio.timeout(self.settings.upstream_connect_timeout_s + 5):
                async with self.http.get(f"{self.base_url}/models") as resp:
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
            )
            for m in body.get("data", [])
            if isinstance(m, dict) and "id" in m
        ]
        if not models:
            raise model_unavailable("no model is loaded")
        return models

    async def resolve(self, requested: Any) -> ServedModel:
        """`model` omitted or "current" → the served model; else its id, the serving profile's
        id or one of its aliases, or an alias from MODEL_ALIASES (names: case-insensitive)."""
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
