"""Tests for answer normalization, EM/F1, score summaries and table rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reader_rag.evaluation import (
    exact_match,
    f1_score,
    markdown_table,
    normalize_answer,
    percentile,
    summarize_scores,
)

NORMALIZATION_CASES = [
    ("Paris", "paris"),
    ("The Eiffel Tower", "eiffel tower"),
    ("an apple a day", "apple day"),
    ("A", ""),
    ("the", ""),
    ("", ""),
    ("   ", ""),
    ("theater and another", "theater and another"),
    ("U.S.A.", "usa"),
    ("don't stop!", "dont stop"),
    ("hello,world", "helloworld"),
    ("  many   spaces\there\n", "many spaces here"),
    ("$1,000", "1000"),
    ("Café", "café"),
    ("ÉCOLE Normale", "école normale"),
    ("“Quoted” text", "quoted text"),
    ("1990–1991", "19901991"),
    ("¿Qué?", "qué"),
    ("x\u00a0y", "x y"),
    ("東京", "東京"),
    ("The. The, the!", ""),
    ("t.h.e end", "end"),
]


@pytest.mark.parametrize(("text", "expected"), NORMALIZATION_CASES)
def test_normalize_answer_cases(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_ignores_case_punctuation_articles():
    assert exact_match("The Beatles!", ["beatles"]) == 1.0
    assert exact_match("george harrison", ["James Ray", "George Harrison"]) == 1.0


def test_exact_match_mismatch_is_zero():
    assert exact_match("George", ["George Harrison"]) == 0.0


def test_exact_match_takes_max_over_golds():
    assert exact_match("1972", ["December 1972", "1972"]) == 1.0
    assert exact_match("1972", ["December 1972", "14 December 1972 UTC"]) == 0.0


def test_exact_match_empty_prediction():
    assert exact_match("", ["Paris"]) == 0.0
    assert exact_match("", ["the"]) == 1.0
    assert exact_match("", [""]) == 1.0


def test_exact_match_unicode():
    assert exact_match("CAFÉ", ["café"]) == 1.0
    assert exact_match("cafe", ["café"]) == 0.0


def test_empty_gold_list_raises():
    with pytest.raises(ValueError, match="gold_answers is empty"):
        exact_match("Paris", [])
    with pytest.raises(ValueError, match="gold_answers is empty"):
        f1_score("Paris", [])


def test_gold_string_raises_type_error():
    with pytest.raises(TypeError, match="Wrap it in a list"):
        exact_match("Paris", "Paris")
    with pytest.raises(TypeError, match="Wrap it in a list"):
        f1_score("Paris", "Paris")


def test_f1_partial_overlap():
    # Normalized tokens: [quick, brown, fox] and [quick, fox, jumps], so 2 shared of 3 each.
    assert f1_score("The quick brown fox", ["quick fox jumps"]) == pytest.approx(2 / 3)


def test_f1_repeated_tokens():
    # [x, x, y] against [x, y]: 2 shared, precision 2/3, recall 1, F1 0.8.
    assert f1_score("x x y", ["x y"]) == pytest.approx(0.8)


def test_f1_takes_max_over_golds():
    score = f1_score("George Harrison", ["James Ray", "Harrison", "George Harrison"])

    assert score == 1.0
    assert f1_score("George Harrison", ["Harrison"]) == pytest.approx(2 / 3)


def test_f1_no_overlap_is_zero():
    assert f1_score("London", ["Paris"]) == 0.0


def test_f1_empty_prediction():
    assert f1_score("", ["Paris"]) == 0.0
    assert f1_score("the", ["Paris"]) == 0.0


def test_f1_empty_gold_string():
    assert f1_score("Paris", [""]) == 0.0
    assert f1_score("", [""]) == 1.0
    assert f1_score("an", ["the"]) == 1.0


def test_f1_ignores_punctuation_and_articles():
    assert f1_score("“The” Beatles.", ["beatles"]) == 1.0


def test_summarize_scores_skips_items_without_gold():
    summary = summarize_scores(
        ["Paris", "quick brown fox", "anything"],
        [["Paris"], ["quick fox jumps"], []],
    )

    assert summary["n_scored"] == 2
    assert summary["exact_match"] == pytest.approx(0.5)
    assert summary["f1"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_summarize_scores_all_skipped():
    summary = summarize_scores(["a", "b"], [[], ()])

    assert summary == {"exact_match": None, "f1": None, "n_scored": 0}


def test_summarize_scores_empty_input():
    assert summarize_scores([], []) == {"exact_match": None, "f1": None, "n_scored": 0}


def test_summarize_scores_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 predictions but 1 gold answer lists"):
        summarize_scores(["a", "b"], [["a"]])


def test_summarize_scores_gold_string_raises():
    with pytest.raises(TypeError, match="Wrap it in a list"):
        summarize_scores(["Paris"], ["Paris"])


def test_summarize_scores_keys():
    summary = summarize_scores(["x"], [["x"]])

    assert set(summary) == {"exact_match", "f1", "n_scored"}
    assert summary["exact_match"] == 1.0
    assert summary["f1"] == 1.0


def test_markdown_table_layout():
    rows = [
        {"method": "greedy", "tokens_per_s": 12.3456, "n": 3},
        {"method": "reader", "tokens_per_s": 30.0, "n": 10},
    ]

    table = markdown_table(rows, ["method", "tokens_per_s", "n"])

    assert table == (
        "| method | tokens_per_s |   n |\n"
        "| ------ | -----------: | --: |\n"
        "| greedy |       12.346 |   3 |\n"
        "| reader |       30.000 |  10 |"
    )


def test_markdown_table_missing_and_none_cells():
    table = markdown_table([{"a": 1.5}, {"a": None, "b": "x"}], ["a", "b"])
    lines = table.split("\n")

    assert lines[2] == "| 1.500 |     |"
    assert lines[3] == "|       | x   |"


def test_markdown_table_escapes_pipes_and_newlines():
    table = markdown_table([{"name": "a|b\nc"}], ["name"])
    lines = table.split("\n")

    assert len(lines) == 3
    assert lines[2] == "| a\\|b c |"


def test_markdown_table_formats_numpy_and_bool():
    table = markdown_table([{"x": np.float32(0.25), "flag": True}], ["x", "flag"])
    lines = table.split("\n")

    assert lines[1] == "| ----: | ---- |"
    assert lines[2] == "| 0.250 | True |"


def test_markdown_table_without_rows():
    assert markdown_table([], ["method"]) == "| method |\n| ------ |"


def test_markdown_table_without_columns_raises():
    with pytest.raises(ValueError, match="at least one column"):
        markdown_table([{"a": 1}], [])


def test_percentile_interpolates():
    values = [1.0, 2.0, 3.0, 4.0]

    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 25) == pytest.approx(1.75)


def test_percentile_accepts_generator():
    assert percentile((value for value in [5, 1, 3]), 50) == 3.0


def test_percentile_single_value():
    assert percentile([7.0], 90) == 7.0


@pytest.mark.parametrize("q", [-1, 100.5, math.nan])
def test_percentile_invalid_q_raises(q):
    with pytest.raises(ValueError, match="q must be between 0 and 100"):
        percentile([1.0, 2.0], q)


def test_percentile_empty_raises():
    with pytest.raises(ValueError, match="values is empty"):
        percentile([], 50)


answer_text = st.text(
    alphabet=st.characters(codec="utf-8"),
    max_size=40,
)
article_or_word = st.sampled_from(["a", "an", "the", "The", "AN", "x", "y", "Zürich", "1972"])
punctuation = st.sampled_from(["", ".", ",", "!", "?", "'", "“", "”", "—", "-", "(", ")"])


@st.composite
def noisy_variants(draw) -> tuple[str, str]:
    """Draw a word list and two renderings that differ in case, punctuation and spacing."""
    words = draw(st.lists(article_or_word, max_size=6))
    first = " ".join(word + draw(punctuation) for word in words)
    second = "  ".join(draw(punctuation) + word.upper() for word in words)
    return first, second


@given(answer_text)
def test_normalize_answer_is_idempotent(text):
    once = normalize_answer(text)

    assert normalize_answer(once) == once


@given(answer_text)
def test_normalize_answer_has_no_articles(text):
    words = normalize_answer(text).split(" ")

    assert not {"a", "an", "the"} & set(words)


@given(answer_text, st.lists(answer_text, min_size=1, max_size=3))
def test_exact_match_implies_full_f1(prediction, gold_answers):
    em = exact_match(prediction, gold_answers)
    f1 = f1_score(prediction, gold_answers)

    assert em in (0.0, 1.0)
    assert 0.0 <= f1 <= 1.0
    if em == 1.0:
        assert f1 == 1.0


@given(noisy_variants())
def test_noisy_variants_match_exactly(variants):
    first, second = variants

    assert exact_match(first, [second]) == 1.0
    assert f1_score(first, [second]) == 1.0


@given(answer_text, answer_text)
def test_f1_is_symmetric(first, second):
    assert f1_score(first, [second]) == pytest.approx(f1_score(second, [first]))
