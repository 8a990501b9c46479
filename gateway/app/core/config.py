"""Settings: one object, read from the environment and `.env` (names of seed 002 §7.4)."""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_JWT_SECRET = "change-me"  # noqa: S105 - the documented placeholder we refuse in production
# The one vLLM release this project is built against (reasoning in `delta.reasoning`,
# `--reasoning-parser`, `--tool-call-parser`): v0.30.0 (September 2026), the newest release we
# could confirm; docker-compose.yml and .env.sample name the same tag, and
# tests/unit/test_vllm_pin.py keeps the three equal.
VLLM_IMAGE = "vllm/vllm-openai:v0.30.0"
GATEWAY_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = GATEWAY_DIR.parent
# an origin as browsers send it in `Origin`: lower-case scheme and host, optional port, no path
_ORIGIN = re.compile(
    r"(https?)://"
    r"([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"  # a host name, IPv4 or [IPv6]
    r"(?::(\d{1,5}))?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Environment(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class ModelRuntime(StrEnum):
    EXTERNAL = "external"
    PROCESS = "process"
    DOCKER = "docker"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(REPO_DIR / ".env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `NAME=` in .env means "the default", as in .env.sample
    )

    # --- deployment -------------------------------------------------------------------
    environment: Environment = Environment.LOCAL
    development_mode: bool = False
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    frontend_port: int = 3000
    # proxies whose X-Forwarded-For gives the client address; empty: none (the TCP peer)
    forwarded_allow_ips: str = ""
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000"]
    )

    # --- auth ---------------------------------------------------------------------------
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_expire_minutes: int = Field(default=30, ge=1, le=60 * 24 * 30)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    admin_username: str = "admin"
    admin_password: str | None = None
    admin_email: str | None = None
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    # during a database outage, credentials resolved up to this long past the TTL still work
    auth_outage_grace_s: float = Field(default=60.0, ge=0, le=3600)
    login_max_failures: int = Field(default=10, ge=1)
    login_window_s: int = Field(default=60, ge=1)

    # --- persistence --------------------------------------------------------------------
    database_url: str | None = None
    postgres_host: str | None = None
    postgres_port: int = 5432
    postgres_db: str = "chat"
    postgres_user: str = "app"
    postgres_password: str = "pass"  # noqa: S105 - compose default, overridden by .env
    sqlite_path: Path = GATEWAY_DIR / "data" / "gateway.db"
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=20, ge=0)
    db_timeout_s: float = Field(default=5.0, gt=0)
    migrate_on_start: bool = True
    db_startup_timeout_s: float = Field(default=30.0, ge=0)

    # --- redis --------------------------------------------------------------------------
    redis_url: str | None = None

    # --- upstream / model -------------------------------------------------------------------
    vllm_base_url: str = "http://127.0.0.1:8000/v1"
    model_runtime: ModelRuntime = ModelRuntime.DOCKER
    model_id: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"
    hugging_face_hub_token: str | None = None
    vllm_port: int = 8000
    vllm_tp: int = Field(default=2, ge=1)
    vllm_maxlen: int = Field(default=8192, ge=1)
    vllm_util: float = Field(default=0.55, gt=0, le=1)
    health_probe_timeout_s: float = Field(default=2.0, gt=0)

    # --- model manager (SPEC §6) ------------------------------------------------------------
    model_profiles_path: Path = GATEWAY_DIR / "profiles" / "profiles.yaml"
    model_default_profile: str | None = None
    # more profiles served at once next to the default one (issue 15): the n-th on VLLM_BASE_URL's
    # port + n, its logs in MODEL_LOG_DIR/slot-n, its container VLLM_CONTAINER_NAME-n
    model_also_serve: Annotated[list[str], NoDecode] = Field(default_factory=list)
    model_ready_timeout_s: float = Field(default=900.0, gt=0)
    model_stop_timeout_s: float = Field(default=30.0, gt=0)
    switch_wait_s: float = Field(default=30.0, ge=0)
    model_restart_max: int = Field(default=5, ge=0)
    model_log_dir: Path = GATEWAY_DIR / "data" / "model-logs"
    # several gateway processes on one Redis: the manager lease (issue 15)
    manager_lease_ttl_s: float = Field(default=3.0, ge=0.3, le=60)
    manager_forward_timeout_s: float = Field(default=10.0, gt=0)
    hf_cache_dir: str = "~/.cache/huggingface"
    # the host's home, for a `~` in HF_CACHE_DIR when the gateway runs in a container (compose
    # sets it: the engine needs the host's path, and the container's own ~ is not it)
    host_home: str | None = None
    docker_host: str | None = None
    docker_gpus: bool = True
    docker_network: str = "host"
    vllm_image: str = VLLM_IMAGE
    vllm_container_name: str = "vllm-server"
    # compose: the project and service the gateway's vLLM containers join (their
    # com.docker.compose.* labels), so `compose down/ps/logs` see them after a switch
    compose_project_name: str | None = None
    compose_service: str = "vllm"
    gpu_probe: Literal["auto", "nvml", "nvidia-smi", "none"] = "auto"
    # the acting process probes the GPUs this often for the gpu_* gauges (0: only on demand)
    gpu_sample_interval_s: float = Field(default=15.0, ge=0)

    # --- tracing (OpenTelemetry; off unless an OTLP/HTTP endpoint is set) ------------------
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "vllm-chat-gateway"

    # --- chat proxy -------------------------------------------------------------------------
    upstream_connect_timeout_s: float = Field(default=5.0, gt=0)
    upstream_first_token_timeout_s: float = Field(default=120.0, gt=0)
    upstream_idle_timeout_s: float = Field(default=60.0, gt=0)
    upstream_max_connections: int = Field(default=1000, ge=1)
    # a profile served by several instances: how often each is probed (`/health`), and the
    # longest wait between two probes of one that was taken out (1, 2, 4 ... up to this)
    upstream_health_interval_s: float = Field(default=2.0, gt=0)
    upstream_retry_max_s: float = Field(default=30.0, gt=0)
    stream_flush_ms: int = Field(default=25, ge=0)
    chat_max_messages: int = Field(default=500, ge=1)
    chat_max_chars: int = Field(default=400_000, ge=1)
    # generation bounds when no managed profile says otherwise (a profile's `sampling.max_tokens`
    # and `max_tokens_ceiling` win); both are also capped by the served model's context length
    chat_default_max_tokens: int = Field(default=1024, ge=1)
    chat_max_tokens_ceiling: int = Field(default=4096, ge=1)
    chat_max_answer_s: float = Field(default=300.0, ge=0)  # /api/chat wall clock; 0: none
    # uvicorn's graceful window on SIGTERM; streams still running this many seconds before it
    # closes are ended by the gateway (error event + [DONE], stored as cut)
    graceful_shutdown_s: int = Field(default=30, gt=0)
    shutdown_stream_margin_s: float = Field(default=3.0, ge=0)
    model_aliases: Annotated[list[str], NoDecode] = Field(default_factory=list)
    content_blocklist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    title_generation: bool = True
    models_cache_s: float = Field(default=5.0, ge=0)

    # --- rate limits (per user; admins override per user) ---------------------------------------
    rate_limit_enabled: bool = True
    # the ceilings are those of the per-user overrides (app.schemas.wire) and their columns
    rate_limit_requests_per_minute: int = Field(default=60, ge=0, le=2**31 - 1)
    rate_limit_concurrent_streams: int = Field(default=4, ge=0, le=2**31 - 1)
    rate_limit_tokens_per_day: int = Field(default=0, ge=0, le=2**53 - 1)
    rate_limit_fail_closed: bool = False
    rate_limit_key_prefix: str = "vcs"

    # --- usage recording ------------------------------------------------------------------------
    usage_batch_size: int = Field(default=500, ge=1)
    usage_flush_interval_ms: int = Field(default=500, ge=10)
    usage_queue_max: int = Field(default=100_000, ge=100)

    # --- retention (the acting process purges; 0 days keeps everything) ---------------------
    retention_days: int = Field(default=0, ge=0, le=36_500)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1, le=10_000)  # ids bound per statement

    # --- metrics ----------------------------------------------------------------------------------
    metrics_token: str | None = None
    metrics_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"]
    )

    # --- HTTP limits and logs ---------------------------------------------------------------
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # request headers: their total size (names and values) and count; more is a 431
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    max_header_count: int = Field(default=100, ge=10, le=10_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    log_content: bool = False
    # log rotation: each log file (local mode: .run/logs, the model server's; compose and the
    # gateway's vLLM containers: Docker's json-file driver) up to this size, this many files
    log_max_size: str = Field(default="20m", pattern=r"^[0-9]+[kmgKMG]?$")
    log_max_file: int = Field(default=5, ge=1, le=100)
    # after start-up, move every object alive then out of the garbage collector's sight
    # (gc.freeze) and collect the young generation less often: full collections of the
    # start-up heap (~100 ms each) were the p99 of a streamed request (issue 17)
    gc_freeze: bool = True

    # --- web UI -------------------------------------------------------------------------------
    ui_dist_dir: Path = REPO_DIR / "frontend" / "dist"

    @field_validator(
        "cors_origins",
        "model_aliases",
        "model_also_serve",
        "content_blocklist",
        "metrics_allow_networks",
        mode="before",
    )
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip() for o in value.split(",") if o.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, value: list[str]) -> list[str]:
        # credentialed CORS: each allowed origin is echoed back, so the list must be exact
        if "*" in value:
            raise ValueError(
                "CORS_ORIGINS must list origins: a wildcard cannot be combined with credentials"
            )
        origins: list[str] = []
        for origin in value:
            match = _ORIGIN.fullmatch(origin.lower())
            if match is None:
                raise ValueError(
                    f"CORS_ORIGINS entry {origin!r} is not an origin: use scheme://host[:port] "
                    "(http or https, no path, no trailing slash), e.g. https://chat.example.com"
                )
            scheme, host, port_text = match.groups()
            port = _DEFAULT_PORTS[scheme] if port_text is None else int(port_text)
            if not 0 < port < 65536:
                raise ValueError(f"CORS_ORIGINS entry {origin!r} has an invalid port")
            # browsers send `https://host`, never `https://host:443`: compare like with like
            origins.append(
                f"{scheme}://{host}"
                if port == _DEFAULT_PORTS[scheme]
                else f"{scheme}://{host}:{port}"
            )
        return origins

    @field_validator("sqlite_path", "ui_dist_dir", "model_log_dir")
    @classmethod
    def _anchor_relative_path(cls, value: Path) -> Path:
        # relative paths are relative to the repository root, whatever the working directory
        return value if value.is_absolute() else REPO_DIR / value

    @field_validator("model_profiles_path")
    @classmethod
    def _anchor_profiles_path(cls, value: Path) -> Path:
        return value if value.is_absolute() else GATEWAY_DIR / value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems: list[str] = []
        if self.jwt_secret == DEFAULT_JWT_SECRET or len(self.jwt_secret) < 32:
            problems.append(
                "JWT_SECRET must be set to a random value of at least 32 characters "
                "(e.g. `openssl rand -hex 32`)"
            )
        if self.development_mode:
            problems.append("DEVELOPMENT_MODE=true is not allowed in production")
        if self.admin_password is not None and self.admin_password in {"admin123", "admin"}:
            problems.append("ADMIN_PASSWORD must not be a well-known default")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    def use_local_jwt_secret(self) -> None:
        """Local mode with the placeholder secret: use a random one kept beside the database,
        so tokens survive restarts but nobody shares the well-known `change-me`."""
        if self.is_production or self.jwt_secret != DEFAULT_JWT_SECRET:
            return
        path = self.sqlite_path.parent / ".jwt_secret"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        self.jwt_secret = path.read_text().strip()

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def seed_demo_accounts(self) -> bool:
        """The `admin/admin123` and `test/test` accounts exist only outside production."""
        return not self.is_production

    @property
    def log_max_bytes(self) -> int:
        """`LOG_MAX_SIZE` in bytes (Docker's spelling: `512k`, `20m`, `1g`)."""
        size = self.log_max_size.lower()
        unit = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(size[-1], 1)
        return int(size.rstrip("kmg")) * unit

    @property
    def effective_database_url(self) -> str:
        """`DATABASE_URL` wins; else Postgres when `POSTGRES_HOST` is set; else SQLite."""
        if self.database_url:
            return normalise_database_url(self.database_url)
        if self.postgres_host:
            return (
                f"postgresql+asyncpg://{quote(self.postgres_user, safe='')}:"
                f"{quote(self.postgres_password, safe='')}@{self.postgres_host}:"
                f"{self.postgres_port}/{self.postgres_db}"
            )
        return f"sqlite+aiosqlite:///{self.sqlite_path}"


def normalise_database_url(url: str) -> str:
    """Accept the usual spellings (`postgres://`, `sqlite://`, ...) and pick async drivers."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
