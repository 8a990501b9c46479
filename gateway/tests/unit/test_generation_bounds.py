"""Bounded generation (issue 12, defect 6): a managed profile's sampling defaults and its
`max_tokens` default and ceiling; the settings when nothing is managed; the context length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.model_manager.profiles import ModelProfile, ProfilesInvalid, parse_profiles
from app.services.chat import ChatService
from app.services.chat_request import (
    answer_count,
    bound_generation,
    openai_request,
    ui_request,
)
from app.services.upstream import Endpoint, ServedModel

MODEL = ServedModel(id="m", max_model_len=4096, created=0, owned_by="")


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": "sqlite+aiosqlite:///:memory:"}
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


def _service(settings: Settings, profile: ModelProfile | None) -> ChatService:
    return ChatService(
        settings,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        profile_for=lambda _model_id: profile,
    )


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def _bound(
    settings: Settings, profile: ModelProfile | None, body: dict[str, Any], *, ui: bool
) -> dict[str, Any]:
    make = ui_request if ui else openai_request
    req = make(body, MODEL, settings)
    bound_generation(req, _service(settings, profile)._bounds(MODEL), MODEL, settings)
    return req.body


@pytest.mark.parametrize("ui", [True, False])
def test_profile_defaults_and_ceiling(ui: bool) -> None:
    settings = _settings()
    profile = ModelProfile(
        name="P",
        model_id="org/p",
        max_model_len=4096,
        sampling={"temperature": 0.3, "top_p": 0.9, "max_tokens": 200, "stream": False},
        max_tokens_ceiling=1000,
    )
    body = _bound(settings, profile, _body(stream=True), ui=ui)
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 200)
    assert body["stream"] is True  # the profile never changes the request's structure
    body = _bound(settings, profile, _body(temperature=1.0, max_tokens=5000 - 1000), ui=ui)
    assert (body["temperature"], body["max_tokens"]) == (1.0, 1000)  # asked: kept; capped
    body = _bound(settings, profile, _body(max_tokens=10), ui=ui)
    assert body["max_tokens"] == 10


def test_profile_without_bounds_uses_the_setting_and_its_context() -> None:
    settings = _settings(chat_default_max_tokens=300)
    profile = ModelProfile(name="P", model_id="org/p", max_model_len=2048)
    body = _bound(settings, profile, _body(), ui=False)
    assert body["max_tokens"] == 300
    body = _bound(settings, profile, _body(max_completion_tokens=2000), ui=False)
    assert body["max_tokens"] == body["max_completion_tokens"] == 2000


def test_nothing_managed_uses_the_settings() -> None:
    settings = _settings(chat_default_max_tokens=64, chat_max_tokens_ceiling=128)
    assert _bound(settings, None, _body(), ui=True)["max_tokens"] == 64
    assert _bound(settings, None, _body(max_tokens=4000), ui=False)["max_tokens"] == 128


def test_the_default_leaves_room_for_the_prompt() -> None:
    settings = _settings(chat_default_max_tokens=4000, chat_max_tokens_ceiling=4096)
    long = _body(messages=[{"role": "user", "content": "x" * 3000}])  # ~1000 tokens at most
    assert _bound(settings, None, long, ui=False)["max_tokens"] == 4096 - 1000
    korean = _body(messages=[{"role": "user", "content": "가" * 3000}])  # 9000 bytes
    assert _bound(settings, None, korean, ui=False)["max_tokens"] == 4096 - 3000
    full = _body(messages=[{"role": "user", "content": "x" * 30_000}])
    assert _bound(settings, None, full, ui=False)["max_tokens"] == 16
    # what the client asks is its own business (the server says if it does not fit)
    assert _bound(settings, None, {**long, "max_tokens": 4000}, ui=False)["max_tokens"] == 4000


def test_profile_max_tokens_must_be_a_positive_integer(tmp_path: Path) -> None:
    with pytest.raises(ProfilesInvalid, match="sampling"):
        parse_profiles({"a": {"name": "A", "model_id": "o/a", "sampling": {"max_tokens": 0}}})
    with pytest.raises(ProfilesInvalid, match="max_tokens_ceiling"):
        parse_profiles({"a": {"name": "A", "model_id": "o/a", "max_tokens_ceiling": 0}})


def test_embeddings_get_no_max_tokens_and_reserve_nothing() -> None:
    settings = _settings()
    bounds = _service(settings, None)._bounds(MODEL)
    req = openai_request({"model": "m", "input": ["a", "b"]}, MODEL, settings, Endpoint.EMBEDDINGS)
    assert bound_generation(req, bounds, MODEL, settings) == 0
    assert "max_tokens" not in req.body


def test_completions_reserve_every_answer_and_leave_room_for_the_prompt() -> None:
    settings = _settings(chat_default_max_tokens=1000)
    small = ServedModel(id="m", max_model_len=1200, created=0, owned_by="")
    bounds = _service(settings, None)._bounds(small)
    body = {"model": "m", "prompt": ["x" * 1500, "y"], "n": 3}
    req = openai_request(body, small, settings, Endpoint.COMPLETIONS)
    bound = bound_generation(req, bounds, small, settings)
    assert bound == 1200 - 1501 // 3  # the default shrinks to leave the prompt its room
    assert answer_count(req) == 6  # 2 prompts x n=3, each may run to the bound
    chat = openai_request(_body(n=2), MODEL, settings)
    assert answer_count(chat) == 2
