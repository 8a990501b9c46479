"""What the simulator says, cut into tokens, and how it counts prompt tokens."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson

# Words carry their leading whitespace; punctuation is a token of its own; Hangul goes by
# two syllables. The alternatives cover every character, so "".join(tokens) == text.
_TOKEN = re.compile(r"\s*[A-Za-z]+|\s*\d+|\s*[가-힣]{1,2}|\s*[^\sA-Za-z\d가-힣]|\s+")
_PROMPT_PIECE = re.compile(r"\w+|[^\w\s]")

GENERIC_TEXT = (
    " This is a simulated answer from the vLLM simulator. It streams plausible text one"
    " token at a time, so that the gateway, its benchmarks and load tests can exercise the"
    " whole request path without a GPU. Nothing here was produced by a real model."
)

JAY_TEXT_EN = (
    'Sure! Here is a short Python program that prints "Jay":\n\n'
    "```python\n"
    'print("Jay")\n'
    "```\n\n"
    "The built-in `print()` function writes its argument to standard output and ends the"
    " line. Save it as `jay.py` and run `python jay.py` to see the name."
)

JAY_TEXT_KO = (
    '물론입니다! "Jay"를 출력하는 간단한 파이썬 코드입니다.\n\n'
    "```python\n"
    'print("Jay")\n'
    "```\n\n"
    "`print()` 함수는 인자로 받은 문자열을 표준 출력에 씁니다."
    " 파일을 `jay.py`로 저장하고 `python jay.py` 명령으로 실행해 보세요."
)


def split_tokens(text: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(text))


@dataclass(frozen=True, slots=True)
class Answer:
    tokens: tuple[str, ...]
    encoded: tuple[bytes, ...]  # each token as a JSON string literal
    text: str

    @staticmethod
    def of(tokens: tuple[str, ...]) -> Answer:
        return Answer(tokens, tuple(orjson.dumps(t) for t in tokens), "".join(tokens))

    def truncated(self, limit: int) -> Answer:
        return _truncated(self, limit) if limit < len(self.tokens) else self


@functools.lru_cache(maxsize=512)
def _truncated(answer: Answer, limit: int) -> Answer:
    return Answer(answer.tokens[:limit], answer.encoded[:limit], "".join(answer.tokens[:limit]))


_GENERIC_CYCLE = split_tokens(GENERIC_TEXT)


@functools.lru_cache(maxsize=512)
def generic_answer(count: int) -> Answer:
    """``count`` tokens of filler text; the first one without its leading space."""
    cycle = _GENERIC_CYCLE
    tokens = [cycle[i % len(cycle)] for i in range(count)]
    if tokens:
        tokens[0] = tokens[0].lstrip()
    return Answer.of(tuple(tokens))


JAY_ANSWER_EN = Answer.of(split_tokens(JAY_TEXT_EN))
JAY_ANSWER_KO = Answer.of(split_tokens(JAY_TEXT_KO))


def message_text(content: Any) -> str:
    """The text of a message's ``content``: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A deterministic stand-in for a tokenizer: word and punctuation pieces, plus framing."""
    total = 3
    for message in messages:
        total += 4 + len(_PROMPT_PIECE.findall(message_text(message.get("content"))))
    return total


def wants_jay_code(text: str) -> bool:
    lowered = text.lower()
    return "jay" in lowered and ("python" in lowered or "파이썬" in lowered)


def title_for(question: str) -> Answer:
    """A gateway asking for a conversation title gets the question's first words back."""
    words = re.sub(r"\[\[sim:[^\]]*\]\]", "", question).split()[:6]
    return Answer.of(split_tokens(" ".join(words) or "New chat"))


def choose_answer(last_user_text: str, generic_tokens: int, system_text: str = "") -> Answer:
    if system_text.lower().startswith("write a short title"):
        return title_for(last_user_text)
    if wants_jay_code(last_user_text):
        if re.search(r"[가-힣]", last_user_text):
            return JAY_ANSWER_KO
        return JAY_ANSWER_EN
    return generic_answer(generic_tokens)
