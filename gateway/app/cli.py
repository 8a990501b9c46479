"""Operator commands: `python -m app.cli {serve,migrate,create-admin,model-status}` (run from
gateway/)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import tempfile

from pydantic import ValidationError

from app.core.config import Settings, get_settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # set before any worker imports prometheus_client: every worker then writes its values
        # to files there and /metrics sums them
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.gateway_host,
        port=args.port or settings.gateway_port,
        workers=args.workers,
        # X-Forwarded-For/-Proto only from the proxies named (nginx); from anyone else, and with
        # none named, the client is the TCP peer (the login throttle counts per client address)
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or None,
        access_log=False,
        log_config=None,
        server_header=False,
        # httptools (the default parser here) reads any header block; the request middleware
        # refuses one past MAX_HEADER_BYTES / MAX_HEADER_COUNT with 431. With h11 the parser
        # itself stops reading at this size.
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # the gateway ends streams SHUTDOWN_STREAM_MARGIN_S before this window closes
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        # longer than the clients' and nginx's idle keep-alive (60 s), so the gateway is never the
        # side that closes an idle connection just as a client sends a request on it
        timeout_keep_alive=75,
    )
    return 0


async def _migrate(settings: Settings) -> None:
    from app.db.engine import create_engine
    from app.db.migrate import migrate

    engine = create_engine(settings)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


async def _create_admin(settings: Settings, username: str, password: str, email: str | None) -> str:
    from app.core.errors import Conflict
    from app.db.engine import create_engine, create_session_factory
    from app.db.models import Role
    from app.schemas.auth import CreateUserRequest
    from app.services.users import UserAdminService

    engine = create_engine(settings)
    try:
        async with create_session_factory(engine).begin() as session:
            data = CreateUserRequest(
                username=username, password=password, email=email, role=Role.ADMIN
            )
            try:
                user = await UserAdminService(session, settings).create(data)
            except Conflict as exc:
                return f"error: {exc.message}"
            return f"admin {user.username!r} created (id {user.id})"
    finally:
        await engine.dispose()


async def _model_status(settings: Settings, url: str | None) -> tuple[int, str]:
    """The running gateway's /api/models/status, asked with a one-minute token of the first
    active admin minted here (the operator's scripts need no password: whoever can run this
    has the gateway's JWT_SECRET and database already)."""
    from datetime import timedelta

    import httpx
    from sqlalchemy import select

    from app.core.security import create_access_token
    from app.db.engine import create_engine, create_session_factory
    from app.db.models import Role, User

    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            admin = await session.scalar(
                select(User)
                .where(User.role == Role.ADMIN.value, User.disabled.is_(False))
                .order_by(User.id)
                .limit(1)
            )
    finally:
        await engine.dispose()
    if admin is None:
        return 1, "error: no active admin account"
    settings.use_local_jwt_secret()  # local mode: the secret the gateway made for itself
    token, _ = create_access_token(
        username=admin.username,
        user_id=admin.id,
        role=admin.role,
        version=admin.token_version,
        secret=settings.jwt_secret,
        lifetime=timedelta(minutes=1),
    )
    base = url or f"http://127.0.0.1:{settings.gateway_port}"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(
                f"{base}/api/models/status", headers={"Authorization": f"Bearer {token}"}
            )
    except httpx.HTTPError as exc:
        return 3, f"error: the gateway at {base} does not answer: {exc!r}"
    if r.status_code != 200:
        return 1, f"error: {r.status_code} {r.text[:300]}"
    return 0, r.text


def _setting_name(loc: tuple[int | str, ...]) -> str:
    """`RETENTION_DAYS: ` for an error about that field (as its variable is spelled in .env);
    nothing for a check across several settings, whose message names them itself."""
    return f"{str(loc[0]).upper()}: " if loc else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway with uvicorn")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    sub.add_parser("migrate", help="apply database migrations up to head")
    admin = sub.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email")
    admin.add_argument("--password", help="read from the terminal when omitted")
    status = sub.add_parser(
        "model-status", help="print the running gateway's /api/models/status (JSON)"
    )
    status.add_argument("--url", help="the gateway's base URL (default: 127.0.0.1:GATEWAY_PORT)")
    args = parser.parse_args(argv)

    try:
        settings = get_settings()
    except ValidationError as exc:
        # the variable and the message only: the input values may hold secrets
        reasons = "\n".join(
            f"  - {_setting_name(err['loc'])}{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        print(f"configuration error:\n{reasons}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        print("database migrated to head")
        return 0
    if args.command == "model-status":
        code, text = asyncio.run(_model_status(settings, args.url))
        print(text, file=sys.stderr if code else sys.stdout)
        return code
    password = args.password or getpass.getpass("password: ")
    message = asyncio.run(_create_admin(settings, args.username, password, args.email))
    print(message)
    return 1 if message.startswith("error") else 0


if __name__ == "__main__":
    sys.exit(main())
