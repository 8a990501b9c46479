"""`<think>` text from a server without vLLM's reasoning parser, and the thinking time."""

from __future__ import annotations

import pytest

from app.services.chat_store import reasoning_ms, split_think
from app.services.chat_stream import StreamOutcome


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\nstep 1\n</think>\n\nThe answer.", ("step 1", "The answer.")),
        ("  <think>cut off mid-thought", ("cut off mid-thought", "")),
        ("No thinking here.", (None, "No thinking here.")),
        ("Text that mentions <think> later", (None, "Text that mentions <think> later")),
        ("<think></think>Only the answer", (None, "Only the answer")),
    ],
)
def test_split_think(text: str, expected: tuple[str | None, str]) -> None:
    assert split_think(text) == expected


def test_reasoning_ms() -> None:
    assert reasoning_ms(StreamOutcome(ttft_ms=100, answer_ttft_ms=1600)) == 1500
    assert reasoning_ms(StreamOutcome(ttft_ms=100, latency_ms=900)) == 800  # never answered
    assert reasoning_ms(StreamOutcome()) is None
