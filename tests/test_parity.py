"""Greedy parity: speculative decoding returns exactly the ids of Hugging Face ``generate``.

Every comparison is exact, token for token, on real Spec-Bench RAG prompts with their passages
as draft documents. A mismatch message names the first differing position and the logit gap
between the two tokens there, which separates an fp32 near-tie from a decoding bug.
"""

from __future__ import annotations

import pytest
import torch

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.cost_model import CostModel
from reader_rag.evaluation.datasets import load_dataset
from reader_rag.generation.generator import ReaderGenerator

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 48
SMOLLM2_PROMPTS = 10
GEMMA_PROMPTS = 3
GEMMA_MAX_NEW_TOKENS = 32
# The EOS token or stop string is placed at one of these output positions. The oracle drafts
# 16 tokens after the first one, so each of them lies inside the first accepted span.
SPAN_POSITIONS = range(4, 15)


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, **options) -> list[int]:
    """Return the new ids of Hugging Face greedy ``generate``."""
    input_ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            **options,
        )
    return output[0, len(prompt_ids) :].tolist()


def first_difference(model, prompt_ids, expected: list[int], actual: list[int]) -> str:
    """Describe where two outputs first differ and how close the target's choice was there."""
    position = next(
        (i for i, (a, b) in enumerate(zip(expected, actual)) if a != b),
        min(len(expected), len(actual)),
    )
    if position >= min(len(expected), len(actual)):
        return f"lengths differ: expected {len(expected)} ids, got {len(actual)}"
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt_ids + expected[:position]])).logits[0, -1]
    gap = float(logits[expected[position]] - logits[actual[position]])
    return (
        f"first difference at output position {position}: expected {expected[position]}, "
        f"got {actual[position]}, logit gap {gap:.3g}"
    )


def assert_same_ids(model, prompt_ids, expected, actual, label: str) -> None:
    if actual != expected:
        detail = first_difference(model, prompt_ids, expected, actual)
        pytest.fail(f"{label}: {detail}")


class Case:
    """One prompt with its draft documents and its Hugging Face greedy reference, computed once."""

    def __init__(self, generator, prompt, documents, max_new_tokens: int) -> None:
        self.prompt_ids = generator.encode_prompt(prompt)
        self.document_ids = generator.encode_documents(documents)
        self.max_new_tokens = max_new_tokens
        self._model = generator.model
        self._reference: list[int] | None = None

    @property
    def reference(self) -> list[int]:
        if self._reference is None:
            self._reference = hf_greedy(self._model, self.prompt_ids, self.max_new_tokens)
        return self._reference


@pytest.fixture(scope="module")
def rag_benchmark():
    return load_dataset("specbench-rag", limit=max(SMOLLM2_PROMPTS, GEMMA_PROMPTS))


@pytest.fixture(scope="module")
def smollm2_cases(smollm2_generator, rag_benchmark) -> list[Case]:
    return [
        Case(
            smollm2_generator,
            [{"role": "user", "content": item.prompt}],
            list(item.passages),
            MAX_NEW_TOKENS,
        )
        for item in rag_benchmark[:SMOLLM2_PROMPTS]
    ]


@pytest.fixture(scope="module")
def smollm2_tree_generator(smollm2_generator):
    """SmolLM2 drafting up to 24 nodes per step, with no cost-model cut."""
    return ReaderGenerator(
        smollm2_generator.model,
        smollm2_generator.tokenizer,
        name=smollm2_generator.name,
        draft=DraftConfig(max_nodes=24),
    )


@pytest.fixture(scope="module")
def smollm2_oracle_generator(smollm2_generator):
    """SmolLM2 with a flat cost curve, so that oracle drafting always verifies 16 tokens."""
    return ReaderGenerator(
        smollm2_generator.model,
        smollm2_generator.tokenizer,
        name=smollm2_generator.name,
        cost_model=CostModel({1: 1.0, 64: 1.0}),
    )


def greedy(max_new_tokens: int, **options) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=max_new_tokens, **options)


def eos_ids(generator) -> set[int]:
    eos = generator.model.generation_config.eos_token_id
    return {eos} if isinstance(eos, int) else set(eos)


def expected_finish_reason(generator, case: Case) -> str:
    return "eos" if case.reference[-1] in eos_ids(generator) else "length"


# -- SmolLM2-135M-Instruct ----------------------------------------------------------------------


def test_smollm2_tree_attention_supported(smollm2_generator):
    # Without it the generator decodes without speculation, and parity would hold trivially.
    assert smollm2_generator.supports_tree_attention


@pytest.mark.parametrize("index", range(SMOLLM2_PROMPTS))
def test_speculative_equals_hf(smollm2_generator, smollm2_cases, index):
    case = smollm2_cases[index]

    result = smollm2_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(MAX_NEW_TOKENS)
    )

    assert_same_ids(
        smollm2_generator.model, case.prompt_ids, case.reference, result.token_ids,
        f"speculative, prompt {index}",
    )
    assert result.finish_reason == expected_finish_reason(smollm2_generator, case)


@pytest.mark.parametrize("index", range(SMOLLM2_PROMPTS))
def test_plain_equals_hf(smollm2_generator, smollm2_cases, index):
    case = smollm2_cases[index]

    result = smollm2_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(MAX_NEW_TOKENS), speculative=False
    )

    assert_same_ids(
        smollm2_generator.model, case.prompt_ids, case.reference, result.token_ids,
        f"speculative=False, prompt {index}",
    )
    assert result.stats.forward_passes == len(result.token_ids)
    assert result.finish_reason == expected_finish_reason(smollm2_generator, case)


@pytest.mark.parametrize("index", range(SMOLLM2_PROMPTS))
def test_tree_budget_equals_hf(smollm2_tree_generator, smollm2_cases, index):
    case = smollm2_cases[index]

    result = smollm2_tree_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(MAX_NEW_TOKENS)
    )

    assert_same_ids(
        smollm2_tree_generator.model, case.prompt_ids, case.reference, result.token_ids,
        f"24-node trees, prompt {index}",
    )
    assert result.stats.drafted_nodes > 0
    assert result.stats.accepted_draft_tokens > 0


def test_oracle_equals_hf(smollm2_oracle_generator, smollm2_cases):
    case = smollm2_cases[0]

    result = smollm2_oracle_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(MAX_NEW_TOKENS), oracle_ids=case.reference
    )

    assert result.token_ids == case.reference
    assert result.stats.accepted_draft_tokens == len(case.reference) - result.stats.forward_passes


# -- EOS and stop strings inside an accepted span -----------------------------------------------


def first_new_token_position(ids: list[int]) -> int:
    """Return the first position in SPAN_POSITIONS whose token does not occur earlier."""
    for position in SPAN_POSITIONS:
        if ids[position] not in ids[:position]:
            return position
    raise AssertionError(f"every token in positions {SPAN_POSITIONS} repeats an earlier one")


def stop_across_tokens(tokenizer, ids: list[int]) -> tuple[str, int]:
    """Return a stop string of the last 2 characters of token k and the first 2 of token k + 1,
    and k + 1, for the first k in SPAN_POSITIONS where that string occurs first in the text."""
    for position in SPAN_POSITIONS:
        before = tokenizer.decode(ids[: position + 1])
        after = tokenizer.decode(ids[: position + 2])
        if not after.startswith(before) or len(after) - len(before) < 2 or len(before) < 2:
            continue
        stop = after[len(before) - 2 : len(before) + 2]
        if stop.strip() and after.find(stop) == len(before) - 2:
            return stop, position + 1
    raise AssertionError("no token boundary in the reference suits a split stop string")


def stop_inside_token(tokenizer, ids: list[int]) -> tuple[str, int]:
    """Return a 2-character stop string strictly inside the text of token k, and k, for the
    first k in SPAN_POSITIONS where that string occurs first in the text."""
    for position in SPAN_POSITIONS:
        before = tokenizer.decode(ids[:position])
        after = tokenizer.decode(ids[: position + 1])
        if not after.startswith(before) or len(after) - len(before) < 4:
            continue
        stop = after[len(before) + 1 : len(before) + 3]
        if stop.strip() and after.find(stop) == len(before) + 1:
            return stop, position
    raise AssertionError("no token in the reference is long enough for an inner stop string")


@pytest.fixture(scope="module")
def span_case(smollm2_cases) -> Case:
    """A prompt whose reference runs to MAX_NEW_TOKENS without an EOS token."""
    case = smollm2_cases[0]
    assert len(case.reference) == MAX_NEW_TOKENS
    return case


DRAFTING_MODES = ["oracle", "documents", "plain"]


def run_mode(mode, oracle_generator, default_generator, case: Case, config: GenerationConfig):
    if mode == "oracle":
        return oracle_generator.generate_ids(
            case.prompt_ids, case.document_ids, config, oracle_ids=case.reference
        )
    return default_generator.generate_ids(
        case.prompt_ids, case.document_ids, config, speculative=mode == "documents"
    )


def test_eos_inside_span_hf(smollm2_generator, span_case):
    position = first_new_token_position(span_case.reference)
    eos = span_case.reference[position]

    hf = hf_greedy(
        smollm2_generator.model, span_case.prompt_ids, MAX_NEW_TOKENS, eos_token_id=eos
    )

    assert hf == span_case.reference[: position + 1]


@pytest.mark.parametrize("mode", DRAFTING_MODES)
def test_eos_inside_span(smollm2_oracle_generator, smollm2_generator, span_case, mode):
    position = first_new_token_position(span_case.reference)
    eos = span_case.reference[position]
    config = greedy(MAX_NEW_TOKENS, eos_token_ids=(eos,))

    result = run_mode(mode, smollm2_oracle_generator, smollm2_generator, span_case, config)

    assert result.token_ids == span_case.reference[: position + 1]
    assert result.finish_reason == "eos"
    if mode == "oracle":
        # Two forward passes (the prefill and one step) mean the EOS token was inside the first
        # accepted chain.
        assert result.stats.forward_passes == 2


@pytest.mark.parametrize("split", [True, False], ids=["across-tokens", "inside-token"])
def test_stop_string_hf(smollm2_generator, span_case, split):
    tokenizer = smollm2_generator.tokenizer
    find_stop = stop_across_tokens if split else stop_inside_token
    stop, last = find_stop(tokenizer, span_case.reference)

    hf = hf_greedy(
        smollm2_generator.model, span_case.prompt_ids, MAX_NEW_TOKENS,
        stop_strings=[stop], tokenizer=tokenizer,
    )

    assert hf == span_case.reference[: last + 1]


@pytest.mark.parametrize("split", [True, False], ids=["across-tokens", "inside-token"])
@pytest.mark.parametrize("mode", DRAFTING_MODES)
def test_stop_string_inside_span(
    smollm2_oracle_generator, smollm2_generator, span_case, mode, split
):
    tokenizer = smollm2_generator.tokenizer
    find_stop = stop_across_tokens if split else stop_inside_token
    stop, last = find_stop(tokenizer, span_case.reference)
    full_text = tokenizer.decode(span_case.reference[: last + 1], skip_special_tokens=True)
    config = greedy(MAX_NEW_TOKENS, stop=(stop,))

    result = run_mode(mode, smollm2_oracle_generator, smollm2_generator, span_case, config)

    assert result.token_ids == span_case.reference[: last + 1]
    assert result.finish_reason == "stop"
    assert result.text == full_text[: full_text.index(stop)]
    if mode == "oracle":
        assert result.stats.forward_passes == 2


# -- Gemma 3 270M: sliding-window layers ---------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_tree_generator(gemma_generator):
    """Gemma drafting up to 16 nodes per step, with no cost-model cut (and no timing run)."""
    return ReaderGenerator(
        gemma_generator.model,
        gemma_generator.tokenizer,
        name=gemma_generator.name,
        draft=DraftConfig(max_nodes=16),
    )


@pytest.fixture(scope="module")
def gemma_cases(gemma_tree_generator, rag_benchmark) -> list[Case]:
    # Gemma 3 270M is a base model without a chat template, so the prompt is plain text.
    return [
        Case(
            gemma_tree_generator,
            item.prompt + "\nAnswer:",
            list(item.passages),
            GEMMA_MAX_NEW_TOKENS,
        )
        for item in rag_benchmark[:GEMMA_PROMPTS]
    ]


def test_gemma_tree_attention_supported(gemma_tree_generator):
    assert gemma_tree_generator.supports_tree_attention


@pytest.mark.parametrize("index", range(GEMMA_PROMPTS))
def test_gemma_speculative_equals_hf(gemma_tree_generator, gemma_cases, index):
    case = gemma_cases[index]

    result = gemma_tree_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(GEMMA_MAX_NEW_TOKENS)
    )

    # The prompt is longer than the sliding window, so the sliding mask hides its first tokens
    # from every tree row.
    assert len(case.prompt_ids) > gemma_tree_generator.sliding_window
    assert_same_ids(
        gemma_tree_generator.model, case.prompt_ids, case.reference, result.token_ids,
        f"Gemma speculative, prompt {index}",
    )
    assert result.stats.drafted_nodes > 0


@pytest.mark.parametrize("index", range(GEMMA_PROMPTS))
def test_gemma_plain_equals_hf(gemma_tree_generator, gemma_cases, index):
    case = gemma_cases[index]

    result = gemma_tree_generator.generate_ids(
        case.prompt_ids, case.document_ids, greedy(GEMMA_MAX_NEW_TOKENS), speculative=False
    )

    assert_same_ids(
        gemma_tree_generator.model, case.prompt_ids, case.reference, result.token_ids,
        f"Gemma speculative=False, prompt {index}",
    )
