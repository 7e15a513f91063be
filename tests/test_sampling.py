"""Tests that speculative sampling keeps the target model's sampling distribution.

The reference is exact: the probability of every short continuation under plain sampling,
computed from the model's logits with the Hugging Face warpers that ``generate(do_sample=True)``
applies. The speculative samples come from a generator that drafts a tree at every step.
All seeds are fixed, so every test here gives the same result on every run.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper
from transformers import TopPLogitsWarper

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.generation.generator import ReaderGenerator

scipy_stats = pytest.importorskip("scipy.stats")

pytestmark = pytest.mark.slow

DOCUMENTS = [
    "The Eiffel Tower is in Paris. It was built in 1889 for the World's Fair.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "The Eiffel Tower was designed by the company of Gustave Eiffel.",
    "The Eiffel Tower is located on the Champ de Mars in Paris.",
]
PROMPT = "Question: Where is the Eiffel Tower?\nAnswer: The Eiffel Tower is"

# Tokens 1 to 3 of the output. Token 1 comes from the prefill, and tokens 2 and 3 are drafted.
POSITIONS = 3
# A p-value below ALPHA fails the test. With fixed seeds the outcome is reproducible, and for
# a correct sampler a new seed set would fail one time in a thousand.
ALPHA = 1e-3
MIN_EXPECTED_COUNT = 5.0

# Configuration and sample count of each case. With 120 samples, draws from draft_biased() of
# either case gave p < 1e-4 for each of 20 numpy seeds, so the test can see a bias of that size.
SAMPLING_CASES = {
    "top-k": (GenerationConfig(max_new_tokens=4, temperature=1.0, top_k=3), 120),
    "top-p": (GenerationConfig(max_new_tokens=4, temperature=0.8, top_p=0.7), 120),
}


@pytest.fixture(scope="module")
def tree_generator(smollm2_generator):
    """SmolLM2 drafting up to 8 nodes per step, with no cost-model cut."""
    return ReaderGenerator(
        smollm2_generator.model,
        smollm2_generator.tokenizer,
        name=smollm2_generator.name,
        draft=DraftConfig(max_nodes=8),
    )


@pytest.fixture(scope="module")
def request_ids(tree_generator):
    return tree_generator.encode_prompt(PROMPT), tree_generator.encode_documents(DOCUMENTS)


@pytest.fixture(scope="module")
def exact_distributions(tree_generator, request_ids) -> dict[str, dict[tuple, float]]:
    """The exact plain-sampling distribution of each case in SAMPLING_CASES."""
    prompt_ids, _ = request_ids
    return {
        case: exact_distribution(tree_generator.model, prompt_ids, config)
        for case, (config, _) in SAMPLING_CASES.items()
    }


def hf_warpers(config: GenerationConfig) -> LogitsProcessorList:
    """Return the warpers of Hugging Face sampling, in the order ``generate`` applies them."""
    warpers = LogitsProcessorList()
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k > 0:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers


def exact_distribution(model, prompt_ids, config, positions=POSITIONS) -> dict[tuple, float]:
    """Return P(first ``positions`` output tokens) under plain sampling, by enumeration."""
    warpers = hf_warpers(config)
    distribution = {(): 1.0}
    with torch.inference_mode():
        for _ in range(positions):
            prefixes = list(distribution)
            input_ids = torch.tensor([prompt_ids + list(prefix) for prefix in prefixes])
            logits = model(input_ids=input_ids).logits[:, -1].float()
            probabilities = torch.softmax(warpers(input_ids, logits), dim=-1)
            extended = {}
            for row, prefix in enumerate(prefixes):
                support = torch.nonzero(probabilities[row]).flatten().tolist()
                for token in support:
                    p = float(probabilities[row, token])
                    extended[(*prefix, token)] = distribution[prefix] * p
            distribution = extended
    return distribution


def chi_square_pvalue(counts: collections.Counter, distribution: dict[tuple, float]) -> float:
    """Pearson's test of ``counts`` against ``distribution``, pooling cells expected below 5."""
    total = sum(counts.values())
    cells = sorted(distribution, key=distribution.get, reverse=True)
    observed, expected = [], []
    pooled_observed, pooled_expected = 0, 0.0
    for cell in cells:
        if distribution[cell] * total >= MIN_EXPECTED_COUNT:
            observed.append(counts[cell])
            expected.append(distribution[cell] * total)
        else:
            pooled_observed += counts[cell]
            pooled_expected += distribution[cell] * total
    if pooled_expected >= MIN_EXPECTED_COUNT:
        observed.append(pooled_observed)
        expected.append(pooled_expected)
    elif expected:
        observed[-1] += pooled_observed
        expected[-1] += pooled_expected
    if len(expected) < 2:
        return 1.0
    expected = np.asarray(expected) * (total / sum(expected))
    return float(scipy_stats.chisquare(observed, expected).pvalue)


def draw_from(distribution: dict[tuple, float], count: int, seed: int) -> collections.Counter:
    cells = list(distribution)
    weights = np.array([distribution[c] for c in cells])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(cells), size=count, p=weights / weights.sum())
    return collections.Counter(cells[i] for i in picks)


def draft_biased(distribution: dict[tuple, float]) -> dict[tuple, float]:
    """Return the distribution of a wrong speculative sampler, for the power check.

    At positions 2 and 3 it accepts the most likely token with that token's probability and
    otherwise samples from the full distribution instead of the residual one, which is a
    common mistake. The drafted token then gets p * (2 - p) instead of p.
    """
    biased = dict(distribution)
    for position in range(1, POSITIONS):
        conditional = collections.defaultdict(dict)
        for cell, p in biased.items():
            conditional[cell[:position]][cell[position:]] = p
        result = {}
        for prefix, tails in conditional.items():
            prefix_mass = sum(tails.values())
            by_token = collections.defaultdict(float)
            for tail, p in tails.items():
                by_token[tail[0]] += p / prefix_mass
            draft = max(by_token, key=by_token.get)
            accept = by_token[draft]
            for tail, p in tails.items():
                # p'(x) = (1 - a) * p(x) + a * [x == draft], as a factor on p(x).
                scale = (1 - accept) + (1.0 if tail[0] == draft else 0.0)
                result[(*prefix, *tail)] = p * scale
        biased = result
    return biased


def sample_outputs(generator, request_ids, config, seeds, speculative=True):
    prompt_ids, document_ids = request_ids
    results = []
    for seed in seeds:
        seeded = dataclasses.replace(config, seed=seed)
        results.append(generator.generate_ids(prompt_ids, document_ids, seeded, speculative))
    return results


# -- reproducibility ----------------------------------------------------------------------------


def test_same_seed_same_ids(tree_generator, request_ids):
    config = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=11)

    first, second = sample_outputs(tree_generator, request_ids, config, [11, 11])

    # The calibrator learns between the two runs, so their draft trees differ.
    assert first.token_ids == second.token_ids


def test_different_seeds_differ(tree_generator, request_ids):
    config = GenerationConfig(max_new_tokens=16, temperature=1.0)

    results = sample_outputs(tree_generator, request_ids, config, range(6))

    distinct = {tuple(r.token_ids) for r in results}
    assert len(distinct) >= 5, f"only {len(distinct)} distinct outputs from 6 seeds"


@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_seeded_speculative_equals_plain(tree_generator, request_ids, case):
    # Drafts never change which token the target samples, and each emitted token takes one
    # draw from the seeded generator, so speculation does not change a seeded output.
    config, _ = SAMPLING_CASES[case]
    seeds = range(1000, 1010)

    speculative = sample_outputs(tree_generator, request_ids, config, seeds)
    plain = sample_outputs(tree_generator, request_ids, config, seeds, speculative=False)

    assert [r.token_ids for r in speculative] == [r.token_ids for r in plain]
    assert all(r.stats.drafted_nodes == 0 for r in plain)


# -- distribution -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_speculative_sampling_distribution(tree_generator, request_ids, exact_distributions, case):
    config, count = SAMPLING_CASES[case]
    distribution = exact_distributions[case]

    results = sample_outputs(tree_generator, request_ids, config, range(count))

    outputs = collections.Counter(tuple(r.token_ids[:POSITIONS]) for r in results)
    drafted = sum(r.stats.drafted_nodes for r in results)
    accepted = sum(r.stats.accepted_draft_tokens for r in results)
    outside = [cell for cell in outputs if cell not in distribution]
    pvalue = chi_square_pvalue(outputs, distribution)
    assert all(len(r.token_ids) >= POSITIONS for r in results), "an output ended early"
    assert accepted > 0, "no draft token was accepted, so the tree path was not tested"
    assert drafted > accepted, "every draft was accepted, so rejection was not tested"
    assert outside == [], f"sampled outside the top-k/top-p support: {outside}"
    assert pvalue >= ALPHA, f"speculative samples differ from plain sampling, p={pvalue:.2e}"


@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_distribution_check_has_power(exact_distributions, case):
    _, count = SAMPLING_CASES[case]
    distribution = exact_distributions[case]
    biased = draft_biased(distribution)

    fair_pvalues = [
        chi_square_pvalue(draw_from(distribution, count, seed), distribution) for seed in range(5)
    ]
    biased_pvalues = [
        chi_square_pvalue(draw_from(biased, count, seed), distribution) for seed in range(5)
    ]

    assert sum(biased.values()) == pytest.approx(1.0)
    assert min(fair_pvalues) >= ALPHA, f"exact samples rejected: {fair_pvalues}"
    assert max(biased_pvalues) < ALPHA, f"biased samples accepted: {biased_pvalues}"


@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_exact_distribution_sums_to_one(exact_distributions, case):
    distribution = exact_distributions[case]

    assert sum(distribution.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(len(cell) == POSITIONS for cell in distribution)


@pytest.mark.parametrize("case", list(SAMPLING_CASES))
def test_hf_sampling_matches_exact(smollm2_generator, request_ids, exact_distributions, case):
    """Hugging Face ``generate(do_sample=True)`` agrees with the enumerated reference."""
    model = smollm2_generator.model
    config, count = SAMPLING_CASES[case]
    prompt_ids, _ = request_ids
    distribution = exact_distributions[case]
    torch.manual_seed(0)

    with torch.inference_mode():
        output = model.generate(
            torch.tensor([prompt_ids] * count),
            attention_mask=torch.ones(count, len(prompt_ids), dtype=torch.long),
            do_sample=True,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            max_new_tokens=POSITIONS,
        )

    outputs = collections.Counter(tuple(row[len(prompt_ids) :].tolist()) for row in output)
    outside = [cell for cell in outputs if cell not in distribution]
    pvalue = chi_square_pvalue(outputs, distribution)
    assert outside == [], f"Hugging Face sampled outside the enumerated support: {outside}"
    assert pvalue >= ALPHA, f"Hugging Face samples differ from the reference, p={pvalue:.2e}"
