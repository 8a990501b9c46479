"""The app factory and its lifespan: every long-lived client is built here, once."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncEngine

from app import __version__
from app.api.openapi import install_openapi
from app.api.routes import (
    admin_users,
    auth,
    chat,
    conversations,
    frontend,
    health,
    metrics,
    models,
    usage,
    user_settings,
)
from app.core.asgi import GatewayApp
from app.core.config import Settings, get_settings
from app.core.errors import install_error_handlers, is_database_outage
from app.core.logging import configure_logging
from app.core.metrics import REDIS_UP, USAGE_QUEUE_CAPACITY, mark_process_dead
from app.core.middleware import RequestContextMiddleware
from app.core.security_headers import SecurityHeadersMiddleware
from app.core.shutdown import ShutdownWatch
from app.core.tracing import setup_tracing, shutdown_tracing
from app.db.engine import create_engine, create_session_factory
from app.db.migrate import migrate
from app.model_manager.coordination import Coordinator, DatabaseCoordinator, RedisCoordinator
from app.model_manager.fleet import Fleet
from app.model_manager.manager import ModelManager
from app.services.chat import ChatService
from app.services.chat_store import ChatStore
from app.services.chat_writer import ChatWriter
from app.services.health import HealthChecker
from app.services.login_throttle import LoginThrottle, login_storage
from app.services.periodic import Periodic
from app.services.principal_cache import PrincipalCache
from app.services.rate_limiter import RateLimiter
from app.services.redis_client import connect_redis
from app.services.retention import RetentionPurger
from app.services.upstream import UpstreamClient
from app.services.usage_recorder import UsageRecorder
from app.services.users import StartupRefused, ensure_initial_accounts

log = structlog.get_logger()

REDIS_PROBE_INTERVAL_S = 10.0


def _redis_probe(redis: Any, timeout_s: float) -> Periodic:
    """`gateway_redis_up{store="redis"}`: every process pings the store it depends on."""
    gauge = REDIS_UP.labels("redis")

    async def ping() -> None:
        try:
            await asyncio.wait_for(redis.ping(), timeout_s)
        except Exception:
            gauge.set(0)
            raise
        gauge.set(1)

    return Periodic("redis-probe", REDIS_PROBE_INTERVAL_S, ping)


async def _migrate_when_reachable(engine: AsyncEngine, settings: Settings) -> None:
    """Compose may start us before Postgres accepts connections: retry for a while."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.db_startup_timeout_s
    delay = 0.25
    while True:
        try:
            await migrate(engine)
            return
        except Exception as exc:
            if not is_database_outage(exc) or loop.time() + delay > deadline:
                raise StartupRefused(
                    f"database not usable at start-up ({type(exc).__name__}: {exc})"
                ) from exc
            log.warning("database not reachable yet, retrying", error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def manager_coordinator(settings: Settings, engine: AsyncEngine) -> Coordinator:
    """Any number of gateway processes share one model manager: a lease decides which acts,
    in Redis when there is one, else in the database they share (Postgres or the SQLite file)."""
    options = {
        "lease_ttl_s": settings.manager_lease_ttl_s,
        "forward_timeout_s": settings.manager_forward_timeout_s,
    }
    if settings.redis_url:
        return RedisCoordinator(settings.redis_url, settings.rate_limit_key_prefix, **options)
    return DatabaseCoordinator(engine, **options)


# objects allocated (net) between two young-generation collections; CPython's default is 700
GC_YOUNG_THRESHOLD = 5000


def quiet_garbage_collector() -> None:
    """The start-up heap (SQLAlchemy's tables, FastAPI's models, the libraries) is alive until
    the process ends; a full collection walked all of it, ~100 ms with the event loop stopped,
    seventeen times in ten seconds at c32 (issue 17: the p99 of every stream). Freeze it, so
    collections see only what requests allocate, and collect the young generation less often
    (requests leave no reference cycles: `GatewayApp` breaks the one the server's `send` made)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    session_factory = create_session_factory(engine)
    redis = connect_redis(settings.redis_url) if settings.redis_url else None
    http = httpx.AsyncClient(timeout=settings.health_probe_timeout_s)
    try:
        try:
            if settings.migrate_on_start:
                await _migrate_when_reachable(engine, settings)
            await ensure_initial_accounts(session_factory, settings)
        except StartupRefused as exc:
            log.error("gateway refused to start", reason=str(exc))
            raise
        if settings.development_mode:
            log.warning(
                "DEVELOPMENT_MODE is on: requests without a token act as the admin. "
                "Never use this outside a developer machine."
            )
        app.state.engine = engine
        app.state.session_factory = session_factory
        app.state.redis = redis
        app.state.http = http
        app.state.login_throttle = LoginThrottle(
            settings.login_max_failures,
            settings.login_window_s,
            login_storage(settings.redis_url, settings.rate_limit_key_prefix),
            fail_closed=settings.rate_limit_fail_closed,
        )
        rate_limiter = RateLimiter(settings, redis)
        app.state.rate_limiter = rate_limiter
        usage_recorder = UsageRecorder(session_factory, settings)
        await usage_recorder.start()
        app.state.usage_recorder = usage_recorder
        USAGE_QUEUE_CAPACITY.set(settings.usage_queue_max)
        upstream = UpstreamClient(settings)
        await upstream.start()
        app.state.upstream = upstream
        app.state.principal_cache = PrincipalCache(
            settings.auth_cache_ttl_s, settings.auth_outage_grace_s
        )
        chat_writer = ChatWriter(engine)
        await chat_writer.start()
        app.state.chat_writer = chat_writer
        # usage rows point at conversations: write those first
        usage_recorder.before_batch = chat_writer.flush
        model_manager = ModelManager(settings, upstream, manager_coordinator(settings, engine))
        app.state.model_manager = model_manager
        fleet = Fleet(settings, model_manager)  # MODEL_ALSO_SERVE: more models at once
        app.state.fleet = fleet
        app.state.chat = ChatService(
            settings,
            upstream,
            ChatStore(engine, chat_writer, title_generation=settings.title_generation),
            usage_recorder,
            rate_limiter,
            gate=model_manager.gate,
            profile_for=fleet.profile_for,
        )
        shutdown_watch = ShutdownWatch(
            max(0.0, settings.graceful_shutdown_s - settings.shutdown_stream_margin_s),
            app.state.chat.stop_streams,
        )
        shutdown_watch.install()
        app.state.shutdown_watch = shutdown_watch
        health_checker = HealthChecker(
            engine,
            timeout_s=settings.health_probe_timeout_s,
            redis=redis,
            upstream_url=settings.vllm_base_url,
            http=http,
        )
        app.state.health = health_checker
        model_manager.on_retarget.append(health_checker.retarget)
        health_checker.pool_view = lambda: upstream.pool.view() if upstream.pool else None
        await model_manager.start()
        await fleet.start()
        if settings.retention_days > 0:
            purger = RetentionPurger(
                engine, settings.retention_days, batch_size=settings.retention_batch_size
            )
            app.state.retention = Periodic(
                "retention",
                settings.retention_interval_s,
                purger.purge,
                acting=lambda: app.state.model_manager.acting,
            )
            app.state.retention.start()
        if redis is not None:
            app.state.redis_probe = _redis_probe(redis, settings.health_probe_timeout_s)
            app.state.redis_probe.start()
        if settings.gc_freeze:
            quiet_garbage_collector()
        log.info(
            "gateway started",
            version=__version__,
            environment=settings.environment.value,
            database=engine.dialect.name,
        )
        yield
    finally:
        retention = getattr(app.state, "retention", None)
        if retention is not None:
            await retention.stop()  # a batch in flight rolls back; the next run redoes it
        redis_probe = getattr(app.state, "redis_probe", None)
        if redis_probe is not None:
            await redis_probe.stop()
        watch = getattr(app.state, "shutdown_watch", None)
        if watch is not None:
            watch.uninstall()
        chat_service = getattr(app.state, "chat", None)
        if chat_service is not None:
            await chat_service.drain()  # answers and titles still being written
        writer = getattr(app.state, "chat_writer", None)
        if writer is not None:
            await writer.stop()  # every queued conversation and message
        fleet_ = getattr(app.state, "fleet", None)
        if fleet_ is not None:
            await fleet_.stop()
        manager = getattr(app.state, "model_manager", None)
        if manager is not None:
            await manager.stop()  # a child-process model server ends with us; containers stay
        upstream_client = getattr(app.state, "upstream", None)
        if upstream_client is not None:
            await upstream_client.stop()
        recorder = getattr(app.state, "usage_recorder", None)
        if recorder is not None:
            await recorder.stop()  # flushes every queued row before the engine goes away
        await http.aclose()
        limiter = getattr(app.state, "rate_limiter", None)
        if limiter is not None:
            await limiter.aclose()  # its own Redis connection
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
        await asyncio.to_thread(shutdown_tracing, getattr(app.state, "tracer_provider", None))
        mark_process_dead(os.getpid())  # this worker's live gauges leave the sums
        log.info("gateway stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.use_local_jwt_secret()
    configure_logging(settings.log_level, settings.log_format)
    app = GatewayApp(
        title="vLLM Chat Gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # the last added is the outermost: security headers -> CORS -> request context -> routes.
    # CORS wraps the request context so the bodies it writes itself (413, 500, 503
    # database_unavailable) stay readable cross-origin; preflights are answered by CORS, before
    # any route's 405, and so carry no request id and write no access-log line.
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=[
            "X-Request-ID",
            "X-Conversation-ID",
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ],
        max_age=600,
    )
    app.add_middleware(SecurityHeadersMiddleware)
    for module in (
        health,
        metrics,
        auth,
        admin_users,
        models,
        chat,
        conversations,
        user_settings,
        usage,
    ):
        app.include_router(module.router)
    app.include_router(frontend.build_router(settings.ui_dist_dir))  # last: a catch-all
    # the relay endpoints first: the router tries routes in order and these are the hot path
    relays = chat.relay_routes()
    app.router.routes[0:0] = relays
    app.relay_routes = {route.path: route for route in relays}
    install_openapi(app)
    app.state.tracer_provider = setup_tracing(app, settings)
    return app
