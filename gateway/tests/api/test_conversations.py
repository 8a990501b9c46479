"""/api/conversations: the caller's own conversations, listed, searched, edited and exported."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select

from app.db.models import Conversation, Message
from app.repositories.conversations import ConversationRepository
from tests.conftest import assert_error

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UNKNOWN_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
MALFORMED_IDS = ["not-a-uuid", "123", UNKNOWN_ID + "0", "%20"]


# --- factories and database probes ---------------------------------------------------------------
async def seed_conversation(
    app: FastAPI,
    user_id: int,
    *,
    title: str | None = None,
    system_prompt: str | None = None,
    model: str | None = None,
    updated_at: datetime = T0,
    messages: Sequence[tuple[str, str]] = (),
) -> str:
    """A conversation written straight to the database; message i is `updated_at` + i seconds."""
    async with app.state.session_factory.begin() as session:
        conversation = Conversation(
            user_id=user_id,
            title=title,
            system_prompt=system_prompt,
            model=model,
            created_at=updated_at,
            updated_at=updated_at,
        )
        session.add(conversation)
        await session.flush()
        for i, (role, content) in enumerate(messages):
            session.add(
                Message(
                    conversation_id=conversation.id,
                    role=role,
                    content=content,
                    model=model if role == "assistant" else None,
                    created_at=updated_at + timedelta(seconds=i),
                )
            )
        conversation_id: str = conversation.id
        return conversation_id


async def stored(app: FastAPI, conversation_id: str) -> Conversation | None:
    async with app.state.session_factory() as session:
        return await session.get(Conversation, conversation_id)


async def stored_message_count(app: FastAPI, conversation_id: str) -> int:
    async with app.state.session_factory() as session:
        stmt = select(func.count(Message.id)).where(Message.conversation_id == conversation_id)
        count: int = (await session.execute(stmt)).scalar_one()
        return count


async def user_id_of(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await client.get("/api/auth/me", headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


@pytest.fixture
async def user_id(client: httpx.AsyncClient, user_headers: dict[str, str]) -> int:
    return await user_id_of(client, user_headers)


@pytest.fixture
async def admin_id(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> int:
    return await user_id_of(client, admin_headers)


@contextmanager
def count_statements(app: FastAPI) -> Iterator[list[str]]:
    statements: list[str] = []

    def on_execute(*args: Any) -> None:
        statements.append(args[2])

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


async def list_all(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get("/api/conversations", headers=headers, params=params)
    assert response.status_code == 200, response.text
    conversations: list[dict[str, Any]] = response.json()["conversations"]
    return conversations


def every_route(conversation_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/api/conversations/{conversation_id}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"title": "taken over", "system_prompt": None}),
        ("DELETE", base, None),
        ("GET", f"{base}/export?format=json", None),
        ("GET", f"{base}/export?format=md", None),
    ]


# --- access --------------------------------------------------------------------------------------
class TestAccess:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/api/conversations", None),
            ("POST", "/api/conversations", {"title": "x"}),
            *every_route(UNKNOWN_ID),
        ],
    )
    async def test_anonymous(
        self, client: httpx.AsyncClient, method: str, path: str, body: object
    ) -> None:
        assert_error(await client.request(method, path, json=body), 401, "unauthorized")

    async def test_other_users_conversation_is_not_found_on_every_route(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], admin_id: int
    ) -> None:
        theirs = await seed_conversation(
            app,
            admin_id,
            title="admin's secrets",
            system_prompt="be terse",
            messages=[("user", "hello"), ("assistant", "hi")],
        )
        for method, path, body in every_route(theirs):
            response = await client.request(method, path, json=body, headers=user_headers)
            assert_error(response, 404, "not_found")
        assert await list_all(client, user_headers) == []
        assert await list_all(client, user_headers, q="secrets") == []
        unchanged = await stored(app, theirs)
        assert unchanged is not None
        assert (unchanged.title, unchanged.system_prompt) == ("admin's secrets", "be terse")
        assert unchanged.updated_at == T0
        assert await stored_message_count(app, theirs) == 2

    @pytest.mark.parametrize("conversation_id", [UNKNOWN_ID, *MALFORMED_IDS])
    async def test_unknown_or_malformed_id_is_not_found(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], conversation_id: str
    ) -> None:
        for method, path, body in every_route(conversation_id):
            response = await client.request(method, path, json=body, headers=user_headers)
            assert_error(response, 404, "not_found")


# --- create --------------------------------------------------------------------------------------
class TestCreate:
    async def test_create_with_fields(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post(
            "/api/conversations",
            headers=user_headers,
            json={"title": "  Trip   plans ", "system_prompt": "You plan trips.", "model": "qwen"},
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {
            "id",
            "title",
            "system_prompt",
            "model",
            "created_at",
            "updated_at",
        }
        assert uuid.UUID(body["id"])
        assert body["title"] == "Trip plans"
        assert body["system_prompt"] == "You plan trips." and body["model"] == "qwen"
        assert body["created_at"] == body["updated_at"]
        got = await client.get(f"/api/conversations/{body['id']}", headers=user_headers)
        assert got.json() == {**body, "messages": []}

    async def test_create_empty_body(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        r = await client.post("/api/conversations", headers=user_headers, json={})
        assert r.status_code == 201, r.text
        assert r.json()["title"] is None and r.json()["system_prompt"] is None
        listed = await list_all(client, user_headers)
        assert [c["id"] for c in listed] == [r.json()["id"]]
        assert listed[0]["message_count"] == 0 and listed[0]["preview"] is None

    @pytest.mark.parametrize(
        "body",
        [
            {"title": ""},
            {"title": "   "},
            {"title": "t" * 201},
            {"title": 123},
            {"system_prompt": "s" * 20_001},
            {"model": ""},
            {"title": "ok", "user_id": 1},
            [],
        ],
    )
    async def test_invalid_is_422(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], body: object
    ) -> None:
        r = await client.post("/api/conversations", headers=user_headers, json=body)
        err = assert_error(r, 422, "validation_error")
        assert err["details"]
        assert await list_all(client, user_headers) == []

    async def test_limits_are_inclusive(
        self, client: httpx.AsyncClient, user_headers: dict[str, str]
    ) -> None:
        body = {"title": "t" * 200, "system_prompt": "s" * 20_000}
        r = await client.post("/api/conversations", headers=user_headers, json=body)
        assert r.status_code == 201, r.text
        assert r.json()["title"] == body["title"]


# --- list ----------------------------------------------------------------------------------------
class TestList:
    async def test_newest_first_with_count_and_preview(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        older = await seed_conversation(app, user_id, title="older", updated_at=T0)
        long_answer = "가" * 50 + "x" * 200
        newer = await seed_conversation(
            app,
            user_id,
            title="newer",
            model="qwen",
            updated_at=T0 + timedelta(hours=1),
            messages=[("user", "question"), ("assistant", long_answer)],
        )
        listed = await list_all(client, user_headers)
        assert [c["id"] for c in listed] == [newer, older]
        first = listed[0]
        assert set(first) == {
            "id",
            "title",
            "model",
            "created_at",
            "updated_at",
            "message_count",
            "preview",
        }
        assert first["message_count"] == 2 and first["model"] == "qwen"
        assert first["preview"] == long_answer[:120]
        assert listed[1]["message_count"] == 0 and listed[1]["preview"] is None

    async def test_pages_have_no_duplicates_or_gaps(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        user_id: int,
        admin_id: int,
    ) -> None:
        # groups of four share one updated_at, so the id tie-break decides within a group
        seeded: list[tuple[datetime, str]] = []
        for i in range(25):
            when = T0 + timedelta(minutes=i // 4)
            seeded.append((when, await seed_conversation(app, user_id, updated_at=when)))
            if i % 5 == 0:
                await seed_conversation(app, admin_id, updated_at=when)
        expected = [cid for _, cid in sorted(seeded, reverse=True)]

        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 7}
            if cursor is not None:
                params["cursor"] = cursor
            r = await client.get("/api/conversations", headers=user_headers, params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            pages += 1
            seen += [c["id"] for c in page["conversations"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(page["conversations"]) == 7
        assert pages == 4
        assert seen == expected

    async def test_exact_last_page_has_no_next_cursor(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        for i in range(4):
            await seed_conversation(app, user_id, updated_at=T0 + timedelta(seconds=i))
        r = await client.get("/api/conversations", headers=user_headers, params={"limit": 2})
        r2 = await client.get(
            "/api/conversations",
            headers=user_headers,
            params={"limit": 2, "cursor": r.json()["next_cursor"]},
        )
        assert len(r2.json()["conversations"]) == 2 and r2.json()["next_cursor"] is None

    async def test_cursor_survives_new_activity(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        ids = [
            await seed_conversation(app, user_id, updated_at=T0 + timedelta(seconds=i))
            for i in range(4)
        ]
        first = await client.get("/api/conversations", headers=user_headers, params={"limit": 2})
        await client.post("/api/conversations", headers=user_headers, json={"title": "new"})
        rest = await client.get(
            "/api/conversations",
            headers=user_headers,
            params={"limit": 10, "cursor": first.json()["next_cursor"]},
        )
        assert [c["id"] for c in rest.json()["conversations"]] == [ids[1], ids[0]]

    async def test_query_count_does_not_grow_with_the_page(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        await seed_conversation(app, user_id, messages=[("user", "a")])
        with count_statements(app) as one:
            await list_all(client, user_headers)
        for i in range(12):
            await seed_conversation(
                app, user_id, updated_at=T0 + timedelta(seconds=i), messages=[("user", "b")] * 3
            )
        with count_statements(app) as many:
            assert len(await list_all(client, user_headers, q="b")) == 12
        assert len(many) == len(one) <= 3

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": 0},
            {"limit": 101},
            {"limit": "ten"},
            {"cursor": "garbage!"},
            {"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
            {"cursor": base64.urlsafe_b64encode(b'["2024-05-01T12:00:00", "x"]').decode()},
            {
                "cursor": base64.urlsafe_b64encode(
                    f'["yesterday", "{UNKNOWN_ID}"]'.encode()
                ).decode()
            },
            {"q": "q" * 201},
        ],
    )
    async def test_invalid_params_are_422(
        self, client: httpx.AsyncClient, user_headers: dict[str, str], params: dict[str, Any]
    ) -> None:
        r = await client.get("/api/conversations", headers=user_headers, params=params)
        assert_error(r, 422, "validation_error")


class TestSearch:
    async def test_title_and_content_case_insensitive(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        by_title = await seed_conversation(app, user_id, title="Python Tips")
        by_content = await seed_conversation(
            app,
            user_id,
            title="cooking",
            updated_at=T0 + timedelta(seconds=1),
            messages=[("user", "How do I write PYTHON decorators?"), ("assistant", "Like so.")],
        )
        await seed_conversation(app, user_id, title="gardening", messages=[("user", "roses")])
        found = await list_all(client, user_headers, q="pyThon")
        assert [c["id"] for c in found] == [by_content, by_title]
        assert [c["id"] for c in await list_all(client, user_headers, q="  like SO ")] == [
            by_content
        ]
        assert await list_all(client, user_headers, q="nothing like this") == []

    @pytest.mark.parametrize(
        ("query", "match", "decoy"),
        [("100%", "100% done", "1000 done"), ("a_b", "a_b", "axb"), ("c\\d", "c\\d", "cd")],
    )
    async def test_wildcards_are_literal(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        user_id: int,
        query: str,
        match: str,
        decoy: str,
    ) -> None:
        wanted = await seed_conversation(app, user_id, title=match)
        await seed_conversation(app, user_id, title=decoy)
        await seed_conversation(app, user_id, messages=[("user", decoy)])
        assert [c["id"] for c in await list_all(client, user_headers, q=query)] == [wanted]

    async def test_search_pages(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        hits = [
            await seed_conversation(
                app, user_id, title=f"hit {i}", updated_at=T0 + timedelta(seconds=i)
            )
            for i in range(3)
        ]
        await seed_conversation(app, user_id, title="miss", updated_at=T0 + timedelta(seconds=9))
        r = await client.get(
            "/api/conversations", headers=user_headers, params={"q": "HIT", "limit": 2}
        )
        page = r.json()
        r2 = await client.get(
            "/api/conversations",
            headers=user_headers,
            params={"q": "HIT", "limit": 2, "cursor": page["next_cursor"]},
        )
        ids = [c["id"] for c in page["conversations"] + r2.json()["conversations"]]
        assert ids == hits[::-1] and r2.json()["next_cursor"] is None


# --- read, edit, delete --------------------------------------------------------------------------
class TestGet:
    async def test_messages_in_order(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, title="t", system_prompt="be kind")
        async with app.state.session_factory.begin() as session:
            # inserted out of order, with a tie on created_at: (created_at, id) decides
            session.add(Message(conversation_id=cid, role="user", content="second", created_at=T0))
            await session.flush()
            session.add(
                Message(
                    conversation_id=cid,
                    role="assistant",
                    content="third",
                    model="qwen",
                    prompt_tokens=5,
                    completion_tokens=7,
                    status="partial",
                    created_at=T0,
                )
            )
            session.add(
                Message(
                    conversation_id=cid,
                    role="system",
                    content="first",
                    created_at=T0 - timedelta(seconds=1),
                )
            )
        r = await client.get(f"/api/conversations/{cid}", headers=user_headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["system_prompt"] == "be kind" and body["title"] == "t"
        assert [m["content"] for m in body["messages"]] == ["first", "second", "third"]
        third = body["messages"][2]
        assert set(third) == {
            "id",
            "role",
            "content",
            "reasoning",
            "reasoning_ms",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "status",
            "created_at",
        }
        assert third["role"] == "assistant" and third["status"] == "partial"
        assert (third["model"], third["prompt_tokens"], third["completion_tokens"]) == (
            "qwen",
            5,
            7,
        )

    async def test_uppercase_id_is_the_same_conversation(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, title="t")
        r = await client.get(f"/api/conversations/{cid.upper()}", headers=user_headers)
        assert r.status_code == 200 and r.json()["id"] == cid


class TestUpdate:
    async def test_rename_bumps_updated_at_and_keeps_prompt(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, title="old", system_prompt="keep me")
        r = await client.patch(
            f"/api/conversations/{cid}", headers=user_headers, json={"title": "new name"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["title"] == "new name" and body["system_prompt"] == "keep me"
        assert "messages" not in body
        assert datetime.fromisoformat(body["updated_at"]) > T0
        row = await stored(app, cid)
        assert row is not None and row.title == "new name" and row.updated_at > T0
        assert row.created_at == T0

    async def test_change_then_clear_system_prompt(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, title="keep", system_prompt="old")
        r = await client.patch(
            f"/api/conversations/{cid}", headers=user_headers, json={"system_prompt": "new"}
        )
        assert (r.json()["title"], r.json()["system_prompt"]) == ("keep", "new")
        r = await client.patch(
            f"/api/conversations/{cid}", headers=user_headers, json={"system_prompt": None}
        )
        assert (r.json()["title"], r.json()["system_prompt"]) == ("keep", None)
        row = await stored(app, cid)
        assert row is not None and row.system_prompt is None and row.title == "keep"

    async def test_empty_patch_changes_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, title="same")
        r = await client.patch(f"/api/conversations/{cid}", headers=user_headers, json={})
        assert r.status_code == 200 and r.json()["title"] == "same"
        row = await stored(app, cid)
        assert row is not None and row.updated_at == T0

    @pytest.mark.parametrize(
        "body",
        [
            {"title": ""},
            {"title": None},
            {"title": "t" * 201},
            {"system_prompt": "s" * 20_001},
            {"model": "other"},
        ],
    )
    async def test_invalid_is_422_and_changes_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        user_headers: dict[str, str],
        user_id: int,
        body: dict[str, Any],
    ) -> None:
        cid = await seed_conversation(app, user_id, title="same", system_prompt="p")
        r = await client.patch(f"/api/conversations/{cid}", headers=user_headers, json=body)
        assert_error(r, 422, "validation_error")
        row = await stored(app, cid)
        assert row is not None
        assert (row.title, row.system_prompt, row.updated_at) == ("same", "p", T0)


class TestDelete:
    async def test_delete_removes_messages(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id, messages=[("user", "a"), ("assistant", "b")])
        keep = await seed_conversation(app, user_id, messages=[("user", "c")])
        r = await client.delete(f"/api/conversations/{cid}", headers=user_headers)
        assert r.status_code == 204 and r.content == b""
        assert await stored(app, cid) is None
        assert await stored_message_count(app, cid) == 0  # ON DELETE CASCADE, on both engines
        assert await stored_message_count(app, keep) == 1
        assert_error(await client.get(f"/api/conversations/{cid}", headers=user_headers), 404)
        assert_error(await client.delete(f"/api/conversations/{cid}", headers=user_headers), 404)
        assert [c["id"] for c in await list_all(client, user_headers)] == [keep]


class TestExport:
    async def test_json_is_the_conversation_document(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(
            app, user_id, title="Exported", messages=[("user", "q"), ("assistant", "a")]
        )
        r = await client.get(f"/api/conversations/{cid}/export?format=json", headers=user_headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["content-disposition"] == (
            f'attachment; filename="conversation-{cid}.json"'
        )
        document = r.json()
        exported_at = document.pop("exported_at")
        assert datetime.fromisoformat(exported_at).tzinfo is not None
        detail = await client.get(f"/api/conversations/{cid}", headers=user_headers)
        assert document == detail.json()

    async def test_json_is_the_default(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id)
        r = await client.get(f"/api/conversations/{cid}/export", headers=user_headers)
        assert r.status_code == 200 and r.json()["id"] == cid

    async def test_markdown_transcript(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(
            app,
            user_id,
            title="Kimchi",
            system_prompt="You are a chef.",
            model="qwen",
            messages=[("user", "How do I make kimchi?"), ("assistant", "Salt the cabbage.")],
        )
        r = await client.get(f"/api/conversations/{cid}/export?format=md", headers=user_headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/markdown")
        assert r.headers["content-disposition"] == f'attachment; filename="conversation-{cid}.md"'
        text = r.text
        assert text.startswith("# Kimchi\n")
        assert "## System prompt\n\nYou are a chef.\n" in text
        user_at = text.index("### User")
        assistant_at = text.index("### Assistant")
        assert user_at < text.index("How do I make kimchi?") < assistant_at
        assert assistant_at < text.index("Salt the cabbage.")
        assert "2024-05-01 12:00:00 UTC" in text and "2024-05-01 12:00:01 UTC · qwen" in text

    async def test_markdown_without_title_or_prompt(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id)
        r = await client.get(f"/api/conversations/{cid}/export?format=md", headers=user_headers)
        assert r.text.startswith("# Untitled conversation\n")
        assert "System prompt" not in r.text and "_No messages yet._" in r.text

    async def test_unknown_format_is_422(
        self, app: FastAPI, client: httpx.AsyncClient, user_headers: dict[str, str], user_id: int
    ) -> None:
        cid = await seed_conversation(app, user_id)
        r = await client.get(f"/api/conversations/{cid}/export?format=pdf", headers=user_headers)
        assert_error(r, 422, "validation_error")


# --- what the chat proxy uses --------------------------------------------------------------------
class TestForTheChatProxy:
    async def test_get_owned(self, app: FastAPI, user_id: int, admin_id: int) -> None:
        mine = await seed_conversation(app, user_id, title="mine")
        theirs = await seed_conversation(app, admin_id)
        async with app.state.session_factory() as session:
            repo = ConversationRepository(session)
            found = await repo.get_owned(mine, user_id)
            assert found is not None and found.title == "mine"
            assert await repo.get_owned(theirs, user_id) is None
            assert await repo.get_owned(UNKNOWN_ID, user_id) is None
            for malformed in MALFORMED_IDS:
                assert await repo.get_owned(malformed, user_id) is None
