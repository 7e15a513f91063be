"""Benchmark datasets and answer-quality metrics."""

from reader_rag.evaluation.datasets import (
    DATASET_NAMES,
    SPECBENCH_CATEGORIES,
    BenchmarkPrompt,
    load_dataset,
    load_nq_open_answers,
    load_specbench,
    match_key,
)
from reader_rag.evaluation.metrics import (
    exact_match,
    f1_score,
    markdown_table,
    normalize_answer,
    percentile,
    summarize_scores,
)

__all__ = [
    "DATASET_NAMES",
    "SPECBENCH_CATEGORIES",
    "BenchmarkPrompt",
    "exact_match",
    "f1_score",
    "load_dataset",
    "load_nq_open_answers",
    "load_specbench",
    "markdown_table",
    "match_key",
    "normalize_answer",
    "percentile",
    "summarize_scores",
]
