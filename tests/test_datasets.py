"""Tests for the bundled Spec-Bench and NQ-open loaders, run against the real files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from reader_rag.evaluation import (
    DATASET_NAMES,
    SPECBENCH_CATEGORIES,
    BenchmarkPrompt,
    load_dataset,
    load_nq_open_answers,
    load_specbench,
    match_key,
)

DATA_DIR = Path(__file__).resolve().parents[1] / "reader_rag" / "data"


def read_raw_jsonl(relative_path: str) -> list[dict]:
    """Read a bundled file directly, without the loader under test."""
    path = DATA_DIR / relative_path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def rag_prompts() -> list[BenchmarkPrompt]:
    return load_specbench("rag")


@pytest.fixture(scope="module")
def summarization_prompts() -> list[BenchmarkPrompt]:
    return load_specbench("summarization")


@pytest.mark.parametrize("category", SPECBENCH_CATEGORIES)
def test_category_has_80_prompts(category):
    prompts = load_specbench(category)

    assert len(prompts) == 80
    assert all(prompt.category == category for prompt in prompts)


def test_rag_matched_gold_count_is_70(rag_prompts):
    matched = [prompt for prompt in rag_prompts if prompt.gold_answers]

    assert len(matched) == 70


def test_raw_files_match_70_rag_questions():
    specbench_rows = read_raw_jsonl("spec_bench/question.jsonl")
    nq_rows = read_raw_jsonl("nq_open/NQ-open.dev.jsonl")
    nq_questions = {row["question"].lower() for row in nq_rows}
    rag_questions = [
        row["turns"][0].split("\n")[-1] for row in specbench_rows if row["category"] == "rag"
    ]
    matched = [
        question for question in rag_questions if question.lower().rstrip("?") in nq_questions
    ]

    assert len(specbench_rows) == 480
    assert len(nq_rows) == 3610
    assert len(rag_questions) == 80
    assert len(matched) == 70


def test_rag_gold_answers_equal_nq_open(rag_prompts):
    nq_answers = {
        row["question"]: tuple(row["answer"])
        for row in read_raw_jsonl("nq_open/NQ-open.dev.jsonl")
    }

    for prompt in rag_prompts:
        expected = nq_answers.get(prompt.question.lower().removesuffix("?"), ())
        assert prompt.gold_answers == expected, prompt.question_id


def test_rag_first_row_split(rag_prompts):
    first = rag_prompts[0]

    assert first.question_id == 481
    assert first.question == "Describe the various uses of forests to human beings?"
    assert len(first.passages) == 5
    assert first.passages[0].startswith("Some researchers state that forests do not only")
    assert first.passages[-1].endswith("and nearly all are inhabited. Many")
    assert "acting as a carbon sink" in first.gold_answers


def test_rag_second_row_split(rag_prompts):
    second = rag_prompts[1]

    assert second.question_id == 482
    assert second.question == "Who sings got my mind set on you?"
    assert second.passages[0].startswith('Got My Mind Set on You "Got My Mind Set on You"')
    assert second.gold_answers == ("James Ray", "George Harrison")


def test_rag_unmatched_question_has_no_gold(rag_prompts):
    by_id = {prompt.question_id: prompt for prompt in rag_prompts}
    unmatched = by_id[488]

    assert unmatched.question == "What 's the biggest country in western europe?"
    assert unmatched.gold_answers == ()
    assert len(unmatched.passages) == 5


def test_rag_split_reassembles_prompt(rag_prompts):
    for prompt in rag_prompts:
        assert "\n".join(prompt.passages + (prompt.question,)) == prompt.prompt, prompt.question_id


def test_rag_passages_are_100_words(rag_prompts):
    for prompt in rag_prompts:
        assert len(prompt.passages) == 5, prompt.question_id
        for passage in prompt.passages:
            assert len(passage.split()) == 100, prompt.question_id


def test_rag_question_is_one_line(rag_prompts):
    for prompt in rag_prompts:
        assert prompt.question.endswith("?"), prompt.question_id
        assert "\n" not in prompt.question, prompt.question_id
        assert prompt.question not in prompt.passages, prompt.question_id


def test_rag_keeps_file_order(rag_prompts):
    assert [prompt.question_id for prompt in rag_prompts] == list(range(481, 561))


def test_summarization_strips_instruction(summarization_prompts):
    for prompt in summarization_prompts:
        assert len(prompt.passages) == 1, prompt.question_id
        article = prompt.passages[0]
        assert prompt.prompt == "Summarize: " + article, prompt.question_id
        assert not article.startswith("Summarize:"), prompt.question_id
        assert prompt.question is None, prompt.question_id
        assert prompt.gold_answers == (), prompt.question_id


def test_summarization_first_row(summarization_prompts):
    first = summarization_prompts[0]

    assert first.question_id == 241
    assert first.passages[0].startswith("Hillary Clinton’s security detail arrived")


def test_summarization_keeps_file_order(summarization_prompts):
    assert [prompt.question_id for prompt in summarization_prompts] == list(range(241, 321))


def test_qa_question_is_prompt():
    prompts = load_specbench("qa")
    first = prompts[0]

    assert first.question == "Who played anna in once upon a time?"
    assert first.passages == ()
    assert all(prompt.question == prompt.prompt for prompt in prompts)
    assert sum(1 for prompt in prompts if prompt.gold_answers) == 43


@pytest.mark.parametrize("category", ["translation", "math_reasoning"])
def test_other_categories_have_no_split(category):
    for prompt in load_specbench(category):
        assert prompt.passages == ()
        assert prompt.question is None
        assert prompt.gold_answers == ()
        assert prompt.prompt


def test_prompt_is_first_turn():
    raw_rows = read_raw_jsonl("spec_bench/question.jsonl")
    raw_first_turns = {row["question_id"]: row["turns"][0] for row in raw_rows}

    for category in SPECBENCH_CATEGORIES:
        for prompt in load_specbench(category):
            assert prompt.prompt == raw_first_turns[prompt.question_id]


def test_limit_returns_prefix(rag_prompts):
    limited = load_specbench("rag", limit=3)

    assert limited == rag_prompts[:3]


def test_limit_above_size_returns_all(rag_prompts):
    assert load_specbench("rag", limit=1000) == rag_prompts


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_below_one_raises(limit):
    with pytest.raises(ValueError, match=f"got {limit}"):
        load_specbench("rag", limit=limit)


@pytest.mark.parametrize("limit", [2.0, "3", True])
def test_limit_wrong_type_raises(limit):
    with pytest.raises(TypeError, match="limit must be an int"):
        load_specbench("rag", limit=limit)


@pytest.mark.parametrize("category", ["writing", "RAG", "", "specbench-rag"])
def test_unknown_category_raises(category):
    with pytest.raises(ValueError, match="rag, summarization, qa, translation, math_reasoning"):
        load_specbench(category)


def test_dataset_names_map_to_categories(rag_prompts, summarization_prompts):
    assert DATASET_NAMES["specbench-rag"] == "rag"
    assert DATASET_NAMES["specbench-summarization"] == "summarization"
    assert load_dataset("specbench-rag") == rag_prompts
    assert load_dataset("specbench-summarization", limit=2) == summarization_prompts[:2]


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError) as error:
        load_dataset("nq-open")

    message = str(error.value)
    assert "'nq-open'" in message
    assert "specbench-rag" in message
    assert "specbench-summarization" in message


def test_dataset_limit_below_one_raises():
    with pytest.raises(ValueError, match="got 0"):
        load_dataset("specbench-rag", limit=0)


def test_returned_list_is_a_copy():
    first = load_specbench("rag")
    first.clear()

    assert len(load_specbench("rag")) == 80


def test_prompt_is_frozen(rag_prompts):
    with pytest.raises(dataclasses.FrozenInstanceError):
        rag_prompts[0].question = "changed"


def test_match_key_cases():
    assert match_key("Who sings got my mind set on you?") == "who sings got my mind set on you"
    assert match_key("no question mark") == "no question mark"
    assert match_key("two marks??") == "two marks?"


def test_nq_open_answers_loaded():
    answers = load_nq_open_answers()

    assert len(answers) == 3610
    assert answers["who sings got my mind set on you"] == ("James Ray", "George Harrison")

    answers.clear()
    assert len(load_nq_open_answers()) == 3610
