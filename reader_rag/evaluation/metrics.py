"""Answer-quality metrics for open-domain QA and helpers for terminal summaries.

``exact_match`` and ``f1_score`` follow the SQuAD conventions. Both strings are normalized, the
prediction is scored against every gold answer, and the best score counts. Scores are fractions
in ``[0, 1]``, not percentages.
"""

from __future__ import annotations

import logging
import math
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "exact_match",
    "f1_score",
    "markdown_table",
    "normalize_answer",
    "percentile",
    "summarize_scores",
]

logger = logging.getLogger(__name__)

_ARTICLES = frozenset({"a", "an", "the"})
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Normalize an answer for comparison.

    The steps are: lowercase, delete punctuation, drop the articles "a", "an" and "the" as whole
    words, and join the remaining words with single spaces. Punctuation is every character in
    ``string.punctuation`` plus every Unicode punctuation character (categories ``P*``), and it
    is deleted without inserting a space, so ``"U.S."`` becomes ``"us"``. Applying the function
    twice gives the same result as applying it once.
    """
    # NOTE: The official SQuAD v1.1 script deletes only ``string.punctuation``. Curly quotes and
    # dashes are deleted here as well, so scores on such text can differ from that script.
    lowered = text.lower()
    without_punctuation = "".join(char for char in lowered if not _is_punctuation(char))
    words = [word for word in without_punctuation.split() if word not in _ARTICLES]
    return " ".join(words)


def exact_match(prediction: str, gold_answers: Sequence[str]) -> float:
    """Return 1.0 if the normalized prediction equals any normalized gold answer, else 0.0.

    Raises:
        ValueError: If ``gold_answers`` is empty. Skip such items, as ``summarize_scores`` does.
        TypeError: If ``gold_answers`` is a single string instead of a sequence of strings.
    """
    _check_gold_answers(gold_answers)
    normalized_prediction = normalize_answer(prediction)
    for gold in gold_answers:
        if normalize_answer(gold) == normalized_prediction:
            return 1.0
    return 0.0


def f1_score(prediction: str, gold_answers: Sequence[str]) -> float:
    """Return the best token-level F1 between the prediction and any gold answer.

    Tokens are the words of ``normalize_answer``, counted with multiplicity. When the
    prediction or a gold answer has no tokens, F1 against that gold is 1.0 if both have none
    and 0.0 otherwise, so an exact match always has F1 1.0.

    Raises:
        ValueError: If ``gold_answers`` is empty.
        TypeError: If ``gold_answers`` is a single string instead of a sequence of strings.
    """
    _check_gold_answers(gold_answers)
    prediction_tokens = normalize_answer(prediction).split()
    scores = [_token_f1(prediction_tokens, normalize_answer(gold).split()) for gold in gold_answers]
    return max(scores)


def summarize_scores(
    predictions: Sequence[str], gold_lists: Sequence[Sequence[str]]
) -> dict[str, float | int | None]:
    """Average exact match and F1 over the items that have gold answers.

    Args:
        predictions: One predicted answer per item.
        gold_lists: The gold answers of each item, aligned with ``predictions``. Items with an
            empty list are skipped.

    Returns:
        ``{"exact_match": mean EM, "f1": mean F1, "n_scored": items scored}``. Both means are
        ``None`` when no item has gold answers.

    Raises:
        ValueError: If the two sequences differ in length.
    """
    if len(predictions) != len(gold_lists):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(gold_lists)} gold answer lists. "
            "Pass one gold list per prediction, and an empty list for an unscored item."
        )

    exact_scores: list[float] = []
    f1_scores: list[float] = []
    for prediction, gold_answers in zip(predictions, gold_lists):
        _check_not_string(gold_answers)
        if len(gold_answers) == 0:
            continue
        exact_scores.append(exact_match(prediction, gold_answers))
        f1_scores.append(f1_score(prediction, gold_answers))

    n_scored = len(exact_scores)
    logger.debug("scored %d of %d predictions", n_scored, len(predictions))
    if n_scored == 0:
        return {"exact_match": None, "f1": None, "n_scored": 0}
    return {
        "exact_match": math.fsum(exact_scores) / n_scored,
        "f1": math.fsum(f1_scores) / n_scored,
        "n_scored": n_scored,
    }


def percentile(values: Iterable[float], q: float) -> float:
    """Return the ``q``-th percentile of ``values``, with ``q`` in ``[0, 100]``.

    Uses linear interpolation between the closest ranks, the default method of
    ``numpy.percentile``. A NaN in ``values`` gives NaN.

    Raises:
        ValueError: If ``values`` is empty or ``q`` is outside ``[0, 100]``.
    """
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("values is empty, so it has no percentile. Pass at least one value.")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    return float(np.percentile(array, q))


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render ``rows`` as a GitHub-flavored Markdown table with the given column order.

    Cells are padded so the table also lines up in a terminal. A float is shown with three
    decimals, a missing key or ``None`` as an empty cell, and any other value with ``str``.
    ``|`` in a cell is escaped and line breaks become spaces. Columns whose cells are all
    numbers, ignoring empty cells, are right-aligned. The result has no trailing newline.

    Raises:
        ValueError: If ``columns`` is empty.
    """
    if len(columns) == 0:
        raise ValueError("markdown_table needs at least one column name, got none")

    header = [_escape_cell(str(column)) for column in columns]
    body = [[_format_cell(row.get(column)) for column in columns] for row in rows]
    right_aligned = [_is_numeric_column(rows, column) for column in columns]
    widths = [
        max([3, len(header[index])] + [len(cells[index]) for cells in body])
        for index in range(len(columns))
    ]

    lines = [_render_line(header, widths, right_aligned)]
    lines.append(_render_separator(widths, right_aligned))
    lines.extend(_render_line(cells, widths, right_aligned) for cells in body)
    return "\n".join(lines)


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_not_string(gold_answers: object) -> None:
    if isinstance(gold_answers, str):
        raise TypeError(
            "gold answers must be a sequence of strings, "
            f"but got the single string {gold_answers!r}. Wrap it in a list."
        )


def _check_gold_answers(gold_answers: Sequence[str]) -> None:
    _check_not_string(gold_answers)
    if len(gold_answers) == 0:
        raise ValueError(
            "gold_answers is empty, so there is nothing to score against. "
            "Skip items without gold answers."
        )


def _is_numeric_column(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    values = [row.get(column) for row in rows]
    present = [value for value in values if value is not None]
    return len(present) > 0 and all(_is_number(value) for value in present)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _format_cell(value: object) -> str:
    if value is None:
        return ""
    if _is_number(value) and not isinstance(value, Integral):
        return f"{float(value):.3f}"
    return _escape_cell(str(value))


def _escape_cell(text: str) -> str:
    single_line = " ".join(text.splitlines())
    return single_line.replace("|", "\\|")


def _render_line(cells: list[str], widths: list[int], right_aligned: list[bool]) -> str:
    padded = [
        cell.rjust(width) if right else cell.ljust(width)
        for cell, width, right in zip(cells, widths, right_aligned)
    ]
    return "| " + " | ".join(padded) + " |"


def _render_separator(widths: list[int], right_aligned: list[bool]) -> str:
    markers = [
        "-" * (width - 1) + ":" if right else "-" * width
        for width, right in zip(widths, right_aligned)
    ]
    return "| " + " | ".join(markers) + " |"
