"""Tests for seeding the recycling table from the prompt's final hidden states at prefill."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.builder import RECYCLE_SOURCE
from reader_rag.drafting.recycling import RecyclingTable, prompt_rows
from reader_rag.evaluation.datasets import BenchmarkPrompt
from reader_rag.evaluation.simulator import (
    Recording,
    load_recordings,
    record_greedy,
    replay,
    replay_report,
    save_recordings,
)
from reader_rag.models import FinalHiddenStates

TEXT = (
    "Kecil the orangutan was raised by two surrogate mothers, Maggie and Sabbath, at the zoo. "
    "Maggie carried Kecil on her back, and Sabbath taught Kecil to climb."
)


def flat_cost(tokens: int) -> float:
    return 1.0


def prompt_states(generator, prompt_ids):
    """Return the prompt's final hidden states and the exact logits of every position."""
    with torch.inference_mode():
        with FinalHiddenStates(generator.model) as final:
            generator.model(input_ids=torch.tensor([prompt_ids]), logits_to_keep=1)
        hidden = final.hidden[0]
        return hidden, generator.model.lm_head(hidden).float()


def last_positions(prompt_ids):
    return {token: position for position, token in enumerate(prompt_ids[:-1])}


def test_rows_follow_the_last_occurrence(smollm2_generator):
    prompt_ids = smollm2_generator.tokenizer(TEXT)["input_ids"]
    hidden, logits = prompt_states(smollm2_generator, prompt_ids)
    weight = smollm2_generator.model.get_output_embeddings().weight
    last = last_positions(prompt_ids)
    # The test distinguishes first from last occurrences only if some repeated token is followed
    # by different predictions at its occurrences, as " Kecil" and " Maggie" are.
    first = {t: p for p, t in reversed(list(enumerate(prompt_ids[:-1])))}
    assert any(
        int(logits[first[t]].argmax()) != int(logits[last[t]].argmax()) for t in last
    )

    keys, ids, probabilities = prompt_rows(prompt_ids, hidden, weight, weight.shape[0], 8)

    assert sorted(keys.tolist()) == sorted(last)
    assert ids.shape == probabilities.shape == (len(last), 8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    for key, row in zip(keys.tolist(), ids.tolist()):
        expected = logits[last[key]].topk(8).indices.tolist()
        assert row[0] == expected[0]
        assert len(set(row) & set(expected)) >= 7  # near-ties may swap at the tail


def test_rows_score_a_reduced_vocabulary(smollm2_generator):
    prompt_ids = smollm2_generator.tokenizer(TEXT)["input_ids"]
    hidden, logits = prompt_states(smollm2_generator, prompt_ids)
    weight = smollm2_generator.model.get_output_embeddings().weight
    allowed = torch.zeros(weight.shape[0], dtype=torch.bool)
    allowed[:500] = True
    allowed[prompt_ids] = True
    last = last_positions(prompt_ids)

    keys, ids, _ = prompt_rows(prompt_ids, hidden, weight, 500, 4)

    assert allowed[torch.from_numpy(ids.astype(np.int64))].all()
    reduced = logits.masked_fill(~allowed, float("-inf"))
    for key, row in zip(keys.tolist(), ids.tolist()):
        assert row[0] == int(reduced[last[key]].argmax())


def test_rows_of_a_one_token_prompt_are_empty():
    keys, ids, probabilities = prompt_rows([5], torch.zeros(1, 4), torch.zeros(10, 4), 10, 3)
    assert keys.shape == (0,)
    assert ids.shape == (0, 3)
    assert probabilities.shape == (0, 3)


def test_rows_add_head_bias():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 4, generator=generator)
    weight = torch.randn(20, 4, generator=generator)
    bias = torch.zeros(20)
    bias[3] = 100.0
    _, ids, _ = prompt_rows([5, 6, 7, 8, 9, 10], hidden, weight, 20, 2, head_bias=bias)
    assert (ids[:, 0] == 3).all()
    _, unbiased, _ = prompt_rows([5, 6, 7, 8, 9, 10], hidden, weight, 20, 2)
    assert not (unbiased[:, 0] == 3).all()


def test_rows_in_chunks_match(monkeypatch):
    import reader_rag.drafting.recycling as recycling

    generator = torch.Generator().manual_seed(1)
    prompt = list(range(40))
    hidden = torch.randn(40, 8, generator=generator)
    weight = torch.randn(60, 8, generator=generator)
    whole = prompt_rows(prompt, hidden, weight, 60, 4)
    monkeypatch.setattr(recycling, "PROMPT_ROWS_CHUNK", 7)
    chunked = prompt_rows(prompt, hidden, weight, 60, 4)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_allclose(whole[2], chunked[2], atol=1e-6)  # BLAS blocking rounds apart


def test_narrow_rows_clear_older_entries():
    table = RecyclingTable(vocab_size=10, k=4)
    table.update_rows(np.array([1]), np.array([[2, 3, 4, 5]]), np.full((1, 4), 0.25))
    table.update_rows(np.array([1]), np.array([[6, 7]]), np.array([[0.6, 0.4]]))
    assert table.next_tokens(1, 4) == [(6, pytest.approx(0.6)), (7, pytest.approx(0.4))]


def test_prefill_seeds_the_table(smollm2_generator):
    generator = smollm2_generator
    prompt_ids = generator.tokenizer(TEXT)["input_ids"]
    hidden, logits = prompt_states(generator, prompt_ids)
    weight = generator.model.get_output_embeddings().weight
    keys, ids, _ = prompt_rows(
        prompt_ids, hidden, weight, generator.draft.prompt_seed_tokens, generator.recycling.k
    )
    config = GenerationConfig(max_new_tokens=1)  # the prefill alone
    draft = generator.draft
    try:
        generator.forget_drafted_text()
        generator.generate_ids(prompt_ids, [], config)
        seeded = {k: generator.recycling.next_tokens(k, 1)[0][0] for k in keys.tolist()}
        assert seeded == {k: row[0] for k, row in zip(keys.tolist(), ids.tolist())
                          if k != prompt_ids[-1]} | {prompt_ids[-1]: int(logits[-1].argmax())}

        generator.forget_drafted_text()
        generator.draft = replace(draft, prompt_seed_tokens=0)
        generator.generate_ids(prompt_ids, [], config)
        rows = {t for t in set(prompt_ids) if generator.recycling.next_tokens(t, 1)}
        assert rows == {prompt_ids[-1]}

        generator.forget_drafted_text()
        generator.generate_ids(prompt_ids, [], config, speculative=False)
        assert (generator.recycling.token_ids == -1).all()
    finally:
        generator.draft = draft
        generator.forget_drafted_text()


def test_batch_prefill_seeds_each_prompt(smollm2_generator):
    generator = smollm2_generator
    texts = [TEXT, "Quantum error correction protects logical qubits from decoherence."]
    prompts = [generator.tokenizer(t)["input_ids"] for t in texts]
    weight = generator.model.get_output_embeddings().weight
    try:
        generator.forget_drafted_text()
        generator.generate_batch_ids(prompts, [[], []], GenerationConfig(max_new_tokens=1))
        for b, prompt_ids in enumerate(prompts):
            others = set().union(*(set(p) for i, p in enumerate(prompts) if i != b))
            hidden, _ = prompt_states(generator, prompt_ids)
            keys, ids, probabilities = prompt_rows(
                prompt_ids, hidden, weight, generator.draft.prompt_seed_tokens, 8
            )
            checked = 0
            for key, row, chances in zip(keys.tolist(), ids.tolist(), probabilities.tolist()):
                if key in others or key == prompt_ids[-1]:
                    continue
                stored = generator.recycling.next_tokens(key, 8)
                assert stored[0][0] == row[0]  # left padding shifted the right rows
                assert stored[0][1] == pytest.approx(chances[0], abs=1e-3)
                checked += 1
            assert checked >= 5
    finally:
        generator.forget_drafted_text()


def test_speculative_output_unchanged_by_seeding(smollm2_generator, rag_prompts):
    generator = smollm2_generator
    prompt = rag_prompts[2]
    messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
    config = GenerationConfig(max_new_tokens=48)
    draft = generator.draft
    try:
        plain = generator.generate(messages, list(prompt.passages), config=config, speculative=False)
        generator.forget_drafted_text()
        seeded = generator.generate(messages, list(prompt.passages), config=config)
        generator.forget_drafted_text()
        generator.draft = replace(draft, prompt_seed_tokens=0)
        unseeded = generator.generate(messages, list(prompt.passages), config=config)
    finally:
        generator.draft = draft
        generator.forget_drafted_text()
    assert seeded.token_ids == plain.token_ids == unseeded.token_ids


# -- simulator ------------------------------------------------------------------------------------


def seeded_recording() -> Recording:
    # The prompt lists tokens 100..139 with a filler token 7 between them, and the model writes
    # them without the filler. The request index only ever proposes 7. The prompt rows contain the
    # model's prediction after each token in the prompt, which is the next number.
    output = list(range(100, 140))
    prompt = [t for token in output for t in (token, 7)] + [1]
    return Recording(
        prompt_ids=prompt,
        document_ids=[],
        output_ids=output,
        top_ids=[[t + 1, 0] for t in output],
        top_probabilities=[[0.9, 0.1]] * len(output),
        seed_keys=output[:-1],
        seed_ids=[[t + 1, 7] for t in output[:-1]],
        seed_probabilities=[[0.8, 0.2]] * (len(output) - 1),
    )


def test_replay_applies_prompt_rows():
    recording = seeded_recording()
    seeded = replay([recording], DraftConfig(max_nodes=8), flat_cost, recycling=True, vocab_size=200)
    unseeded = replay(
        [recording], DraftConfig(max_nodes=8, prompt_seed_tokens=0), flat_cost, recycling=True,
        vocab_size=200,
    )
    assert seeded.accepted_by_source.get(RECYCLE_SOURCE, 0) > 20
    assert unseeded.accepted_by_source.get(RECYCLE_SOURCE, 0) == 0
    assert seeded.steps < unseeded.steps - 20


def test_replay_report_shows_prompt_rows():
    report = replay_report([seeded_recording()], flat_cost, node_budgets=(8,), vocab_size=200)
    rate = {row["sources"]: row["tokens_per_step"] for row in report["rows"]}
    assert rate["all"] > rate["all, no prompt rows"] + 0.5
    assert rate["suffix+recycling"] > rate["suffix"] + 0.5


def test_replay_accepts_empty_prompt_rows(tmp_path):
    recording = seeded_recording()
    recording.seed_keys, recording.seed_ids, recording.seed_probabilities = [], [], []
    path = tmp_path / "recordings.jsonl"
    save_recordings([recording], path)
    result = replay(load_recordings(path), DraftConfig(max_nodes=8), flat_cost, recycling=True)
    assert result.tokens == len(recording.output_ids)


def test_seed_rows_round_trip(tmp_path):
    path = tmp_path / "recordings.jsonl"
    save_recordings([seeded_recording()], path)
    loaded = load_recordings(path)[0]
    assert loaded.seed_keys == seeded_recording().seed_keys
    assert loaded.seed_ids == seeded_recording().seed_ids


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('"seed_keys": [1]', "come together"),
        ('"seed_keys": [1, 2], "seed_ids": [[3]], "seed_probabilities": [[1.0]]', "one row"),
        ('"seed_keys": [1], "seed_ids": [[3]], "seed_probabilities": [[2.0]]', "between 0 and 1"),
        ('"seed_keys": [-1], "seed_ids": [[3]], "seed_probabilities": [[1.0]]', "non-negative"),
    ],
)
def test_bad_seed_rows_are_rejected(tmp_path, fields, message):
    path = tmp_path / "recordings.jsonl"
    path.write_text('{"prompt_ids": [1, 2], "document_ids": [], "output_ids": [2], ' + fields + "}\n")
    with pytest.raises(ValueError, match=message):
        load_recordings(path)


def test_recording_stores_prompt_rows(smollm2_generator):
    prompt = BenchmarkPrompt("test-1", "summarization", TEXT, (TEXT,), None, ())
    (recording,) = record_greedy(smollm2_generator, [prompt], max_new_tokens=3, progress=False)
    prompt_ids = recording.prompt_ids
    assert sorted(recording.seed_keys) == sorted(last_positions(prompt_ids))
    assert len(recording.seed_ids) == len(recording.seed_keys)
    assert {len(row) for row in recording.seed_ids} == {8}


@pytest.mark.parametrize("value", [2.5, "4", True, -1])
def test_seed_budget_must_be_a_count(value):
    with pytest.raises(ValueError, match="prompt_seed_tokens must be an integer"):
        DraftConfig(prompt_seed_tokens=value)


def test_capture_ignores_other_threads(smollm2_generator):
    import threading

    model = smollm2_generator.model
    with torch.inference_mode(), FinalHiddenStates(model) as final:
        other = threading.Thread(
            target=lambda: model(input_ids=torch.tensor([[1, 2, 3, 4, 5]]), logits_to_keep=1)
        )
        other.start()
        other.join()
        assert final.hidden is None  # another thread's forward pass is not this capture's
        model(input_ids=torch.tensor([[7, 8, 9]]), logits_to_keep=1)
    assert final.hidden.shape[:2] == (1, 3)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[7, 8]]), logits_to_keep=1)
    assert final.hidden.shape[:2] == (1, 3)  # closed captures keep what they saw


def test_prompt_ids_outside_vocabulary(smollm2_generator):
    vocab_size = smollm2_generator.recycling.vocab_size
    config = GenerationConfig(max_new_tokens=2)
    for speculative in (True, False):
        with pytest.raises(ValueError, match=f"prompt token id {vocab_size} is outside"):
            smollm2_generator.generate_ids([1, 2, vocab_size], [], config, speculative=speculative)
