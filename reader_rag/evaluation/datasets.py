"""Loaders for the bundled Spec-Bench prompts and their Natural Questions gold answers.

Both files ship inside the ``reader_rag.data`` package (see ``reader_rag/data/README.md``), so
loading needs no network. Each Spec-Bench ``rag`` prompt is five retrieved Wikipedia passages,
one per line, followed by the question on the last line. Every passage in the bundled file is
exactly 100 whitespace-separated words, cut from a longer article, so a passage can start or end
mid-sentence. Gold answers come from NQ-open, matched on the question text. Each
``summarization`` prompt is ``"Summarize: "`` followed by one CNN/DailyMail article.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "BenchmarkPrompt",
    "DATASET_NAMES",
    "SPECBENCH_CATEGORIES",
    "load_dataset",
    "load_nq_open_answers",
    "load_specbench",
    "match_key",
]

logger = logging.getLogger(__name__)

_DATA_PACKAGE = "reader_rag.data"
_SPECBENCH_PATH = ("spec_bench", "question.jsonl")
_NQ_OPEN_PATH = ("nq_open", "NQ-open.dev.jsonl")

SPECBENCH_CATEGORIES: tuple[str, ...] = (
    "rag",
    "summarization",
    "qa",
    "translation",
    "math_reasoning",
)
"""Spec-Bench categories that ``load_specbench`` accepts, spelled as in ``question.jsonl``."""

DATASET_NAMES: dict[str, str] = {
    f"specbench-{category}": category for category in SPECBENCH_CATEGORIES
}
"""Dataset name accepted by ``load_dataset``, mapped to its Spec-Bench category."""

_SUMMARIZATION_PREFIX = "Summarize: "


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One Spec-Bench prompt, split into the parts that retrieval drafting and scoring use.

    Attributes:
        question_id: Spec-Bench ``question_id``.
        category: Spec-Bench category, one of ``SPECBENCH_CATEGORIES``.
        prompt: The full first turn, unchanged.
        passages: For ``rag``, the prompt lines before the last. For ``summarization``, the
            article without the ``"Summarize: "`` instruction, as a one-element tuple. Empty
            for the other categories.
        question: For ``rag``, the last prompt line. For ``qa``, the whole prompt. ``None`` for
            the other categories.
        gold_answers: NQ-open answers for a ``rag`` or ``qa`` question found in NQ-open by
            ``match_key``, otherwise empty.
    """

    question_id: int
    category: str
    prompt: str
    passages: tuple[str, ...]
    question: str | None
    gold_answers: tuple[str, ...]


def match_key(question: str) -> str:
    """Return the key that pairs a Spec-Bench question with an NQ-open question.

    The key is the question lowercased, with one trailing ``?`` removed.
    """
    # NOTE: Spec-Bench tokenizes some questions ("lemony snicket 's") while NQ-open does not
    # ("lemony snicket's"), so 10 of the 80 rag questions find no match under this key.
    return question.lower().removesuffix("?")


def load_specbench(category: str, limit: int | None = None) -> list[BenchmarkPrompt]:
    """Load the prompts of one Spec-Bench category in file order.

    Args:
        category: One of ``SPECBENCH_CATEGORIES``.
        limit: Return only the first ``limit`` prompts. ``None`` returns all of them.

    Returns:
        A new list on every call, so callers may modify it.

    Raises:
        ValueError: If ``category`` is not supported, or ``limit`` is below 1.
        TypeError: If ``limit`` is not an int or ``None``.
    """
    if category not in SPECBENCH_CATEGORIES:
        raise ValueError(
            f"unsupported Spec-Bench category {category!r}. "
            f"Use one of: {', '.join(SPECBENCH_CATEGORIES)}"
        )
    _check_limit(limit)

    prompts = _build_category(category)
    if limit is None:
        return list(prompts)
    return list(prompts[:limit])


def load_dataset(name: str, limit: int | None = None) -> list[BenchmarkPrompt]:
    """Load a dataset by its name in ``DATASET_NAMES``, such as ``"specbench-rag"``.

    Raises:
        ValueError: If ``name`` is unknown, or ``limit`` is below 1.
    """
    category = DATASET_NAMES.get(name)
    if category is None:
        raise ValueError(f"unknown dataset {name!r}. Use one of: {', '.join(DATASET_NAMES)}")
    return load_specbench(category, limit=limit)


def load_nq_open_answers() -> dict[str, tuple[str, ...]]:
    """Load the NQ-open dev answers, keyed by ``match_key`` of each question.

    Returns:
        A new dict on every call. The 3,610 NQ-open dev questions have distinct keys.
    """
    return dict(_read_nq_open_answers())


def _check_limit(limit: int | None) -> None:
    """Raise if ``limit`` is neither ``None`` nor an integer of at least 1."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(
            f"limit must be an int or None, got {limit!r} of type {type(limit).__name__}"
        )
    if limit < 1:
        raise ValueError(f"limit must be at least 1 or None for all prompts, got {limit}")


@lru_cache(maxsize=None)
def _build_category(category: str) -> tuple[BenchmarkPrompt, ...]:
    """Build the prompts of one category, cached because ``BenchmarkPrompt`` is immutable."""
    answers = _read_nq_open_answers()
    rows = [row for row in _read_specbench_rows() if row["category"] == category]
    prompts = tuple(_build_prompt(row, answers) for row in rows)

    matched = sum(1 for prompt in prompts if prompt.gold_answers)
    logger.debug(
        "loaded %d Spec-Bench %s prompts, %d with gold answers", len(prompts), category, matched
    )
    return prompts


def _build_prompt(row: dict[str, Any], answers: dict[str, tuple[str, ...]]) -> BenchmarkPrompt:
    """Split one Spec-Bench row into a ``BenchmarkPrompt``."""
    question_id = int(row["question_id"])
    category = row["category"]
    prompt = row["turns"][0]

    passages: tuple[str, ...] = ()
    question: str | None = None
    if category == "rag":
        passages, question = _split_rag_prompt(prompt, question_id)
    elif category == "summarization":
        passages = (_strip_summarization_instruction(prompt, question_id),)
    elif category == "qa":
        question = prompt

    gold_answers: tuple[str, ...] = ()
    if question is not None:
        gold_answers = answers.get(match_key(question), ())

    return BenchmarkPrompt(
        question_id=question_id,
        category=category,
        prompt=prompt,
        passages=passages,
        question=question,
        gold_answers=gold_answers,
    )


def _split_rag_prompt(prompt: str, question_id: int) -> tuple[tuple[str, ...], str]:
    """Split a rag prompt into its passage lines and its last line, the question."""
    lines = prompt.split("\n")
    if len(lines) < 2:
        raise ValueError(
            f"Spec-Bench rag prompt {question_id} has {len(lines)} line(s), but it needs passage "
            "lines followed by a question line. Check that question.jsonl is the bundled copy."
        )
    return tuple(lines[:-1]), lines[-1]


def _strip_summarization_instruction(prompt: str, question_id: int) -> str:
    """Return the text after the ``"Summarize: "`` instruction, or the whole prompt if absent."""
    if prompt.startswith(_SUMMARIZATION_PREFIX):
        return prompt[len(_SUMMARIZATION_PREFIX) :]
    logger.warning(
        "Spec-Bench summarization prompt %d does not start with %r, "
        "so the whole prompt is used as the article",
        question_id,
        _SUMMARIZATION_PREFIX,
    )
    return prompt


@lru_cache(maxsize=None)
def _read_specbench_rows() -> tuple[dict[str, Any], ...]:
    """Read every row of the bundled Spec-Bench ``question.jsonl``, all categories, in file order.

    The cache shares the row dicts, so callers must not modify them.
    """
    return tuple(_read_jsonl(*_SPECBENCH_PATH))


@lru_cache(maxsize=None)
def _read_nq_open_answers() -> dict[str, tuple[str, ...]]:
    """Read the bundled NQ-open dev set into a cached, shared ``match_key`` to answers dict."""
    answers: dict[str, tuple[str, ...]] = {}
    for row in _read_jsonl(*_NQ_OPEN_PATH):
        key = match_key(row["question"])
        if key in answers:
            logger.warning(
                "NQ-open question %r appears twice, so its first answers are kept", row["question"]
            )
            continue
        answers[key] = tuple(row["answer"])
    return answers


def _read_jsonl(*parts: str) -> list[dict[str, Any]]:
    """Parse a JSON Lines file inside ``reader_rag.data``, skipping blank lines."""
    resource = resources.files(_DATA_PACKAGE)
    for part in parts:
        resource = resource.joinpath(part)
    rows: list[dict[str, Any]] = []
    with resource.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                location = "/".join(parts)
                raise ValueError(
                    f"invalid JSON on line {line_number} of {location}: {error}"
                ) from error
    return rows
