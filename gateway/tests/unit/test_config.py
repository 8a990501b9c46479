"""Settings: database selection and the production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings

STRONG = "s" * 48


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class TestDatabaseUrl:
    def test_sqlite_by_default(self, tmp_path: Path) -> None:
        s = _settings(sqlite_path=tmp_path / "x.db", database_url=None, postgres_host=None)
        assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    def test_postgres_from_parts_with_quoting(self) -> None:
        s = _settings(
            database_url=None,
            postgres_host="db",
            postgres_user="app",
            postgres_password="p@ss:w/rd",
            postgres_db="chat",
        )
        assert s.effective_database_url == "postgresql+asyncpg://app:p%40ss%3Aw%2Frd@db:5432/chat"

    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("postgres://u:p@h/d", "postgresql+asyncpg://u:p@h/d"),
            ("postgresql://u:p@h:6432/d", "postgresql+asyncpg://u:p@h:6432/d"),
            ("sqlite:////tmp/a.db", "sqlite+aiosqlite:////tmp/a.db"),
            ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ],
    )
    def test_database_url_wins_and_is_normalised(self, given: str, expected: str) -> None:
        assert (
            _settings(database_url=given, postgres_host="ignored").effective_database_url
            == expected
        )

    def test_cors_origins_from_comma_list(self) -> None:
        s = _settings(cors_origins="http://a.example, https://b.example")
        assert s.cors_origins == ["http://a.example", "https://b.example"]


class TestProductionRefusals:
    def test_default_secret_refused(self) -> None:
        with pytest.raises(ValidationError, match="JWT_SECRET"):
            _settings(environment="production")

    def test_short_secret_refused(self) -> None:
        with pytest.raises(ValidationError, match="at least 32"):
            _settings(environment="production", jwt_secret="short-but-not-default")

    def test_development_mode_refused(self) -> None:
        with pytest.raises(ValidationError, match="DEVELOPMENT_MODE"):
            _settings(environment="production", jwt_secret=STRONG, development_mode=True)

    def test_well_known_admin_password_refused(self) -> None:
        with pytest.raises(ValidationError, match="ADMIN_PASSWORD"):
            _settings(environment="production", jwt_secret=STRONG, admin_password="admin123")

    def test_sound_production_settings_accepted(self) -> None:
        s = _settings(environment="production", jwt_secret=STRONG, admin_password="a-real-one")
        assert s.is_production and not s.seed_demo_accounts

    def test_local_mode_accepts_defaults_and_seeds_demo_accounts(self) -> None:
        s = _settings()
        assert not s.is_production and s.seed_demo_accounts


class TestLocalJwtSecret:
    def test_placeholder_replaced_by_persistent_random_secret(self, tmp_path: Path) -> None:
        a = _settings(sqlite_path=tmp_path / "g.db")
        a.use_local_jwt_secret()
        b = _settings(sqlite_path=tmp_path / "g.db")
        b.use_local_jwt_secret()
        assert a.jwt_secret == b.jwt_secret != "change-me"
        assert len(a.jwt_secret) == 64
        assert (tmp_path / ".jwt_secret").stat().st_mode & 0o777 == 0o600

    def test_explicit_secret_kept(self, tmp_path: Path) -> None:
        s = _settings(sqlite_path=tmp_path / "g.db", jwt_secret=STRONG)
        s.use_local_jwt_secret()
        assert s.jwt_secret == STRONG and not (tmp_path / ".jwt_secret").exists()


class TestEnvironmentParsing:
    def test_empty_values_mean_default_and_relative_sqlite_is_repo_relative(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from app.core.config import REPO_DIR

        for name in ("DATABASE_URL", "POSTGRES_HOST", "REDIS_URL", "ADMIN_EMAIL"):
            monkeypatch.setenv(name, "")
        monkeypatch.setenv("SQLITE_PATH", "gateway/data/x.db")
        s = Settings(_env_file=None)
        assert s.database_url is None and s.redis_url is None and s.admin_email is None
        assert s.sqlite_path == REPO_DIR / "gateway/data/x.db"
        assert s.effective_database_url.startswith("sqlite+aiosqlite:////")

    def test_env_sample_documents_every_setting(self) -> None:
        from app.core.config import REPO_DIR

        sample = (REPO_DIR / ".env.sample").read_text()
        documented = {
            line.split("=", 1)[0]
            for line in sample.splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert {name.upper() for name in Settings.model_fields} <= documented
        # and the sample itself is a valid configuration
        values = dict(
            line.split("=", 1)
            for line in sample.splitlines()
            if "=" in line and not line.startswith("#")
        )
        assert Settings(_env_file=None, **{k.lower(): v for k, v in values.items() if v})  # type: ignore[arg-type]


def test_the_cli_names_the_variable_a_configuration_error_is_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`RETENTION_DAYS=abc ./start` said only "Input should be a valid integer": the operator
    had to guess which of the ~100 settings. The message names the variable (not its value,
    which may be a secret)."""
    from app import cli
    from app.core.config import get_settings

    monkeypatch.setenv("RETENTION_DAYS", "abc")
    monkeypatch.setenv("LOG_MAX_FILE", "-3")
    get_settings.cache_clear()
    try:
        assert cli.main(["migrate"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("configuration error:"), err
    assert "RETENTION_DAYS: Input should be a valid integer" in err, err
    assert "LOG_MAX_FILE: " in err, err
    assert "abc" not in err
