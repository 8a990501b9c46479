"""/api/chat and conversations: what is stored, the system prompt, titles, shutdown."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from app.db.engine import create_engine, create_session_factory
from app.db.models import Conversation, Message, RequestLog
from tests.conftest import content_of, login, make_settings, read_sse, sim_get, sim_post, wait_until


async def _token(gw, user: str = "test", password: str = "test") -> str:  # type: ignore[no-untyped-def]
    async with gw.client() as c:
        return await login(c, user, password)


async def _conversation(gw, token: str, cid: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    async with gw.client(token) as c:
        r = await c.get(f"/api/conversations/{cid}")
        assert r.status_code == 200
        return r.json()  # type: ignore[no-any-return]


async def test_first_exchange_creates_a_titled_conversation(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(title_generation=True) as gw:
        token = await _token(gw)
        async with (
            gw.client(token) as c,
            c.stream(
                "POST",
                "/api/chat",
                json={"messages": [{"role": "user", "content": "How do tides work?"}]},
            ) as r,
        ):
            assert r.status_code == 200
            cid = r.headers["x-conversation-id"]
            events = await read_sse(r)
        assert events[0]["conversation_id"] == cid
        answer = content_of(events)

        async def titled() -> dict | None:  # type: ignore[type-arg]
            conv = await _conversation(gw, token, cid)
            return conv if conv["title"] and len(conv["messages"]) == 2 else None

        conv = await wait_until(titled, timeout=10)
        user, assistant = conv["messages"]
        assert conv["title"] == "How do tides work?"  # the simulator's answer to the title prompt
        assert (user["role"], user["content"]) == ("user", "How do tides work?")
        assert (assistant["role"], assistant["content"], assistant["status"]) == (
            "assistant",
            answer,
            "complete",
        )
        assert assistant["completion_tokens"] == 16 and assistant["prompt_tokens"] > 0
        history = await sim_get(simulator, "/sim/requests")
        assert (
            len(history["requests"] if isinstance(history, dict) else history) == 2
        )  # answer + title
        async with gw.client(token) as c:
            listed = (await c.get("/api/conversations")).json()["conversations"]
        assert [x["id"] for x in listed] == [cid]


async def test_continuing_a_conversation_uses_its_system_prompt(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            created = await c.post(
                "/api/conversations",
                json={"title": "Pirates", "system_prompt": "Talk like a pirate."},
            )
            cid = created.json()["id"]
            body = {
                "conversation_id": cid,
                "stream": False,
                "messages": [{"role": "user", "content": "Hello"}],
            }
            r = await c.post("/api/chat", json=body)
            assert r.status_code == 200 and r.json()["conversation_id"] == cid
            assert r.headers["x-conversation-id"] == cid
        sent = (await sim_get(simulator, "/sim/stats"))["last_request"]["messages"]
        assert sent[0] == {"role": "system", "content": "Talk like a pirate."}
        assert sent[1] == {"role": "user", "content": "Hello"}
        conv = await wait_until(lambda: _with_messages(gw, token, cid, 2))
        assert conv["title"] == "Pirates"


async def test_user_default_system_prompt_and_an_explicit_one(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            put = await c.put("/api/users/me/settings", json={"system_prompt": "Be brief."})
            assert put.status_code == 200
            await c.post(
                "/api/chat", json={"stream": False, "messages": [{"role": "user", "content": "Hi"}]}
            )
            assert (await sim_get(simulator, "/sim/stats"))["last_request"]["messages"][0][
                "content"
            ] == "Be brief."
            own = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Hi"}]
            await c.post("/api/chat", json={"stream": False, "messages": own})
            assert (await sim_get(simulator, "/sim/stats"))["last_request"]["messages"] == own
            # /v1 clients control their own prompts: nothing is prepended
            await c.post(
                "/v1/chat/completions",
                json={"model": "current", "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert (await sim_get(simulator, "/sim/stats"))["last_request"]["messages"] == [
                {"role": "user", "content": "Hi"}
            ]


async def test_save_false_stores_nothing(start_gateway) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            r = await c.post(
                "/api/chat",
                json={
                    "save": False,
                    "stream": False,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            )
            assert r.status_code == 200 and "x-conversation-id" not in r.headers
        async with gw.app.state.session_factory() as session:
            assert (await session.execute(select(func.count(Conversation.id)))).scalar_one() == 0


async def test_other_users_conversation_is_404_and_untouched(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        admin = await _token(gw, "admin", "admin123")
        async with gw.client(admin) as c:
            cid = (await c.post("/api/conversations", json={"title": "secret"})).json()["id"]
        token = await _token(gw)
        async with gw.client(token) as c:
            r = await c.post(
                "/api/chat",
                json={"conversation_id": cid, "messages": [{"role": "user", "content": "Hi"}]},
            )
            assert r.status_code == 404
        assert (await sim_get(simulator, "/sim/stats"))["requests_total"] == 0
        async with gw.app.state.session_factory() as session:
            assert (await session.execute(select(func.count(Message.id)))).scalar_one() == 0


async def test_graceful_shutdown_writes_every_queued_row(
    start_gateway, database_url: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(usage_flush_interval_ms=600_000, usage_batch_size=10_000) as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            for i in range(20):
                r = await c.post(
                    "/v1/chat/completions",
                    json={"model": "current", "messages": [{"role": "user", "content": f"q{i}"}]},
                )
                assert r.status_code == 200
        assert gw.app.state.usage_recorder.queue_depth == 20  # nothing written yet
    engine = create_engine(make_settings(database_url, tmp_path), database_url)
    try:
        async with create_session_factory(engine)() as session:
            rows = (await session.execute(select(RequestLog))).scalars().all()
        assert len(rows) == 20 and all(
            r.status_code == 200 and r.completion_tokens == 16 for r in rows
        )
    finally:
        await engine.dispose()


async def _with_messages(gw, token: str, cid: str, n: int) -> dict | None:  # type: ignore[no-untyped-def, type-arg]
    conv = await _conversation(gw, token, cid)
    return conv if len(conv["messages"]) == n else None


async def test_postgres_outage_mid_answer_loses_no_message(  # type: ignore[no-untyped-def]
    simulator, proxied_postgres, tmp_path: Path
) -> None:
    """The database goes away while an answer streams: the answer waits in the chat writer's
    queue and is written when the database is back."""
    from app.main import create_app
    from tests.conftest import LiveGateway, sim_post
    from tests.ports import free_port

    direct_url, proxied_url, proxy = proxied_postgres
    await sim_post(simulator, "/sim/reset", {"config": True})
    settings = make_settings(
        proxied_url, tmp_path, vllm_base_url=f"{simulator.url}/v1", title_generation=False
    )
    async with LiveGateway(create_app(settings), free_port()) as gw:
        token = await _token(gw)
        async with gw.client(token) as c:
            body = {"messages": [{"role": "user", "content": "slowly [[sim:tokens=20;itl_ms=50]]"}]}
            async with c.stream("POST", "/api/chat", json=body) as r:
                assert r.status_code == 200
                cid = r.headers["x-conversation-id"]
                await gw.app.state.chat_writer.flush()  # the question is stored
                await proxy.stop()  # the database goes away mid-answer
                events = await read_sse(r)
        assert events[-1] == "[DONE]" and len(content_of(events)) > 0
        await wait_until(lambda: gw.app.state.chat_writer.queue_depth > 0)  # the answer waits
        await proxy.start()

        engine = create_engine(make_settings(direct_url, tmp_path), direct_url)
        try:

            async def stored() -> list[Message]:
                async with create_session_factory(engine)() as session:
                    rows = (
                        (
                            await session.execute(
                                select(Message).where(Message.conversation_id == cid)
                            )
                        )
                        .scalars()
                        .all()
                    )
                return list(rows) if len(rows) == 2 else []

            user, answer = await wait_until(stored, timeout=15)
        finally:
            await engine.dispose()
    assert user.content.startswith("slowly") and answer.content == content_of(events)
    assert answer.status == "complete"


async def _ask(gw, token: str, question: str, **extra: object) -> str:  # type: ignore[no-untyped-def]
    async with (
        gw.client(token) as c,
        c.stream(
            "POST", "/api/chat", json={"messages": [{"role": "user", "content": question}], **extra}
        ) as r,
    ):
        assert r.status_code == 200
        events = await read_sse(r)
        assert events[-1] == "[DONE]"
        return str(r.headers["x-conversation-id"])


async def test_title_is_the_question_at_once_and_the_generated_one_follows(  # type: ignore[no-untyped-def]
    start_gateway, simulator
) -> None:
    async with start_gateway(title_generation=True) as gw:
        token = await _token(gw)
        # every model call takes a second: the title is asked for only after the answer ended
        await sim_post(simulator, "/sim/config", {"ttft_ms": 1000})
        question = "Please explain to me how the ocean tides work every day"
        cid = await _ask(gw, token, question)
        async with gw.client(token) as c:
            listed = (await c.get("/api/conversations")).json()["conversations"]
        # never "Untitled": the question's first words until a generated title arrives
        assert [x["title"] for x in listed] == ["Please explain to me how the ocean tides"]

        async def generated() -> str | None:
            title = (await _conversation(gw, token, cid))["title"]
            return title if title == "Please explain to me how the" else None

        await wait_until(generated, timeout=10)  # the simulator's title: 6 words


async def test_a_rename_during_title_generation_is_kept(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway(title_generation=True) as gw:
        token = await _token(gw)
        await sim_post(simulator, "/sim/config", {"ttft_ms": 1000})
        cid = await _ask(gw, token, "Please explain to me how the ocean tides work every day")
        async with gw.client(token) as c:
            r = await c.patch(f"/api/conversations/{cid}", json={"title": "My tides"})
            assert r.status_code == 200

        async def title_request_answered() -> bool:
            stats = await sim_get(simulator, "/sim/requests")
            requests = stats["requests"] if isinstance(stats, dict) else stats
            return len(requests) == 2

        await wait_until(title_request_answered, timeout=10)  # the title task has started
        await wait_until(lambda: not gw.app.state.chat._background, timeout=10)  # and ended
        assert (await _conversation(gw, token, cid))["title"] == "My tides"


async def test_regenerated_answers_are_variants_of_one_turn(start_gateway, simulator) -> None:  # type: ignore[no-untyped-def]
    async with start_gateway() as gw:
        token = await _token(gw)
        question = {"role": "user", "content": "Tell me a story"}
        cid = await _ask(gw, token, "Tell me a story")
        first = await wait_until(lambda: _with_messages(gw, token, cid, 2))
        first_answer = first["messages"][1]
        # regenerate twice: the question is not stored again, each answer joins the turn
        await sim_post(simulator, "/sim/config", {"tokens": 5})
        await _ask(gw, token, "Tell me a story", conversation_id=cid, regenerate=True)
        await sim_post(simulator, "/sim/config", {"tokens": 7})
        await _ask(gw, token, "Tell me a story", conversation_id=cid, regenerate=True)

        async def three_variants() -> dict | None:  # type: ignore[type-arg]
            conv = await _conversation(gw, token, cid)
            return conv if len(conv["messages"][-1]["variants"]) == 3 else None

        conv = await wait_until(three_variants)
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
        shown = conv["messages"][1]
        variants = shown["variants"]
        assert variants[0]["id"] == first_answer["id"]
        assert [v["completion_tokens"] for v in variants] == [16, 5, 7]
        assert shown["variant_index"] == 2 and shown["id"] == variants[2]["id"]  # the newest

        # choose the first answer: it is what the conversation shows from now on
        async with gw.client(token) as c:
            r = await c.put(f"/api/conversations/{cid}/messages/{variants[0]['id']}/active")
            assert r.status_code == 200
            assert r.json()["messages"][1]["variant_index"] == 0
            again = await _conversation(gw, token, cid)
            assert again["messages"][1]["id"] == variants[0]["id"]
            assert again["messages"][1]["content"] == first_answer["content"]
            assert [v["id"] for v in again["messages"][1]["variants"]] == [
                v["id"] for v in variants
            ]
            # the next turn continues from the chosen answer (the UI sends it as history)
            body = {
                "conversation_id": cid,
                "stream": False,
                "messages": [
                    question,
                    {"role": "assistant", "content": first_answer["content"]},
                    {"role": "user", "content": "And then?"},
                ],
            }
            assert (await c.post("/api/chat", json=body)).status_code == 200
            conv = await wait_until(lambda: _with_messages(gw, token, cid, 4))
            assert [m["role"] for m in conv["messages"]] == [
                "user",
                "assistant",
                "user",
                "assistant",
            ]
            assert conv["messages"][1]["variant_index"] == 0
            assert "variants" not in conv["messages"][3]  # a turn answered once
            # the markdown export names the chosen answer; the JSON one keeps every variant
            md = (await c.get(f"/api/conversations/{cid}/export?format=md")).text
            assert "answer 1 of 3" in md
            exported = (await c.get(f"/api/conversations/{cid}/export")).json()
            assert len(exported["messages"][1]["variants"]) == 3

            # someone else's message, a user message, an unknown id: 404 in the SPEC's shape
            user_message_id = conv["messages"][0]["id"]
            for mid in (user_message_id, 999_999, 2**62):
                r = await c.put(f"/api/conversations/{cid}/messages/{mid}/active")
                assert r.status_code == 404 and r.json()["error"]["code"] == "message_not_found"
            r = await c.put(f"/api/conversations/{cid}/messages/abc/active")
            assert r.status_code == 422
        other = await _token(gw, "admin", "admin123")
        async with gw.client(other) as c:
            r = await c.put(f"/api/conversations/{cid}/messages/{variants[1]['id']}/active")
            assert r.status_code == 404
        assert (await _conversation(gw, token, cid))["messages"][1]["variant_index"] == 0
