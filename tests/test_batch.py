"""Batch decoding: each request's output equals its single-request output."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reader_rag import GenerationConfig
from reader_rag.evaluation import load_dataset

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 24


@pytest.fixture(scope="module")
def mixed_requests(smollm2_generator):
    """Eight real prompts of different lengths: Spec-Bench RAG and summarization."""
    generator = smollm2_generator
    prompts = load_dataset("specbench-rag", limit=5) + load_dataset(
        "specbench-summarization", limit=3
    )
    prompt_ids = [generator.encode_prompt([{"role": "user", "content": p.prompt}]) for p in prompts]
    document_ids = [generator.encode_documents(list(p.passages)) for p in prompts]
    assert len({len(ids) for ids in prompt_ids}) > 4, "prompts should differ in length"
    return prompt_ids, document_ids


@pytest.fixture(scope="module")
def single_outputs(smollm2_generator, mixed_requests):
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    return [
        smollm2_generator.generate_ids(ids, docs, config).token_ids
        for ids, docs in zip(prompt_ids, document_ids)
    ]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batch_equals_single_greedy(smollm2_generator, mixed_requests, single_outputs, batch_size):
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    results = smollm2_generator.generate_batch_ids(
        prompt_ids[:batch_size], document_ids[:batch_size], config
    )
    assert len(results) == batch_size
    for i, result in enumerate(results):
        assert result.token_ids == single_outputs[i], f"request {i} differs"
        assert result.stats.batch_size == batch_size


def test_batch_plain_equals_single(smollm2_generator, mixed_requests, single_outputs):
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    results = smollm2_generator.generate_batch_ids(
        prompt_ids[:3], document_ids[:3], config, speculative=False
    )
    for i, result in enumerate(results):
        assert result.token_ids == single_outputs[i], f"request {i} differs"
        assert result.stats.tokens_per_step == pytest.approx(1.0)


def test_batch_requests_finish_at_different_times(smollm2_generator, mixed_requests):
    generator = smollm2_generator
    prompt_ids, document_ids = mixed_requests
    configs = [
        GenerationConfig(max_new_tokens=3),
        GenerationConfig(max_new_tokens=MAX_NEW_TOKENS),
        GenerationConfig(max_new_tokens=11),
        GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, stop=("the",)),
    ]
    batch = generator.generate_batch_ids(prompt_ids[:4], document_ids[:4], configs)
    for i, (config, result) in enumerate(zip(configs, batch)):
        single = generator.generate_ids(prompt_ids[i], document_ids[i], config)
        assert result.token_ids == single.token_ids, f"request {i} differs"
        assert result.finish_reason == single.finish_reason
        assert result.text == single.text
    assert len(batch[0].token_ids) == 3
    assert len(batch[2].token_ids) <= 11


def test_batch_sampling_with_seeds_equals_single(smollm2_generator, mixed_requests):
    generator = smollm2_generator
    prompt_ids, document_ids = mixed_requests
    configs = [
        GenerationConfig(max_new_tokens=16, temperature=0.9, top_p=0.95, seed=seed)
        for seed in (1, 2, 3)
    ]
    batch = generator.generate_batch_ids(prompt_ids[:3], document_ids[:3], configs)
    for i, (config, result) in enumerate(zip(configs, batch)):
        single = generator.generate_ids(prompt_ids[i], document_ids[i], config)
        assert result.token_ids == single.token_ids, f"request {i} differs"


def test_forced_compaction_keeps_outputs(smollm2_generator, mixed_requests, single_outputs):
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    # A threshold of 0 compacts after every step that left a masked slot behind.
    results = smollm2_generator.generate_batch_ids(
        prompt_ids[:3], document_ids[:3], config, compaction_threshold=0.0
    )
    for i, result in enumerate(results):
        assert result.token_ids == single_outputs[i], f"request {i} differs"
    assert results[0].stats.compaction_time_s > 0


def test_batch_rejects_mismatched_lengths(smollm2_generator):
    with pytest.raises(ValueError, match="2 prompts but 1 document lists"):
        smollm2_generator.generate_batch(["a", "b"], [["doc"]])
    with pytest.raises(ValueError, match="2 prompts but 3 configs"):
        smollm2_generator.generate_batch(["a", "b"], configs=[GenerationConfig()] * 3)


def test_batch_of_nothing_returns_empty(smollm2_generator):
    assert smollm2_generator.generate_batch([]) == []


def test_batch_steps_refit_their_curve(smollm2_generator, mixed_requests):
    # Only steps over exactly two requests feed the two-request curve; the step after the first
    # request finishes decodes one request and must not.
    generator = smollm2_generator
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=MAX_NEW_TOKENS)
    refit = generator.batch_step_cost(2)
    before = refit.observed_passes
    decay = 1 - 1 / 256
    results = generator.generate_batch_ids(prompt_ids[:2], document_ids[:2], config)

    joint_steps = min(result.stats.forward_passes for result in results) - 1
    expected = before * decay**joint_steps + (1 - decay**joint_steps) / (1 - decay)
    assert joint_steps > 0
    assert refit.observed_passes == pytest.approx(expected)
    assert generator.batch_step_cost(3) is generator.batch_step_cost(4)
    assert generator.batch_step_cost(1) is generator.step_cost


def test_batch_refit_switched_off(smollm2_generator, mixed_requests):
    generator = smollm2_generator
    prompt_ids, document_ids = mixed_requests
    config = GenerationConfig(max_new_tokens=8)
    passes = generator.batch_step_cost(2).observed_passes
    draft = generator.draft
    generator.draft = replace(draft, refit_cost_slope=False)
    try:
        assert generator.batch_step_cost(2) is generator.batch_cost_model(2)
        generator.generate_batch_ids(prompt_ids[:2], document_ids[:2], config)
    finally:
        generator.draft = draft
    assert generator.batch_step_cost(2).observed_passes == passes
