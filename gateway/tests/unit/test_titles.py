"""Which generated titles are shown, and which give way to the question's first words."""

from __future__ import annotations

import pytest

from app.services.chat_store import fallback_title, good_title


@pytest.mark.parametrize(
    ("raw", "question", "answer", "expected"),
    [
        (
            "Ocean tides explained",
            "How do ocean tides work?",
            "The moon pulls...",
            "Ocean tides explained",
        ),
        ('Title: "Tides and the moon"', "Why are there tides?", "", "Tides and the moon"),
        ("곱셈 질문", "12 곱하기 7은 얼마인가요?", "84입니다.", "곱셈 질문"),
        ("12 * 7 multiplication", "What is 12 * 7?", "12 * 7 = 80", "12 * 7 multiplication"),
    ],
)
def test_a_good_title_is_kept(raw: str, question: str, answer: str, expected: str) -> None:
    assert good_title(raw, question, answer) == expected


@pytest.mark.parametrize(
    ("raw", "question", "answer"),
    [
        ("", "What is 12 * 7?", "84"),  # empty
        ('  "" ', "What is 12 * 7?", "84"),  # only quotes
        ("12 * 7 = 80", "What is 12 * 7?", "12 * 7 = 80, because..."),  # the (wrong) answer
        ("The answer is 84", "What is twelve times seven?", "The answer is 84."),  # a result
        ("Paris is the capital", "capital of France?", "Paris is the capital of France."),  # echo
        ("I'm sorry, I can't help with that", "capital of France?", ""),  # a refusal
        ("죄송하지만 제목을 만들 수 없습니다", "파이썬 리스트 정렬 방법", ""),  # a Korean refusal
        (
            "A conversation about the many wonderful ways one can sort a list in Python code",
            "How do I sort a list in Python?",
            "",
        ),  # too long
        ("Le voyage de la baleine", "How do I sort a list in Python?", ""),  # nonsense
        (
            "Python list sorting",
            "파이썬에서 리스트를 정렬하려면?",
            "",
        ),  # not the question's language
    ],
)
def test_a_weak_title_gives_way_to_the_question(raw: str, question: str, answer: str) -> None:
    assert good_title(raw, question, answer) is None


def test_fallback_is_the_questions_first_words() -> None:
    assert fallback_title("  How   do tides work?  ") == "How do tides work?"
    assert fallback_title("one two three four five six seven eight nine") == (
        "one two three four five six seven eight"
    )
    assert fallback_title("x" * 200).endswith("…") and len(fallback_title("x" * 200)) == 80
