from __future__ import annotations

import pytest

from common.chunking import split_into_chunks
from testing.oracle import expected_answer


@pytest.mark.parametrize("target", [8, 40, 120, 500])
def test_chunks_join_back_to_the_text(target: int) -> None:
    text = expected_answer("chunking", 800)
    chunks = split_into_chunks(text, target)
    assert "".join(chunks) == text
    assert all(chunks)
    assert split_into_chunks(text, target) == chunks  # deterministic


def test_cuts_at_sentence_ends_when_possible() -> None:
    text = "One short sentence here. " * 20
    chunks = split_into_chunks(text, 60)
    assert all(chunk.endswith(". ") for chunk in chunks)


def test_cuts_between_words_without_sentences() -> None:
    text = " ".join(["word"] * 200)
    for chunk in split_into_chunks(text, 30)[:-1]:
        assert chunk.endswith(" ")
        assert len(chunk) <= 45


def test_very_long_word_is_cut_at_target() -> None:
    chunks = split_into_chunks("x" * 100, 30)
    assert "".join(chunks) == "x" * 100
    assert max(len(c) for c in chunks) <= 45


def test_empty_text_has_no_chunks() -> None:
    assert split_into_chunks("", 100) == []
