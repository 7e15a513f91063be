"""Tests for the cost curve whose slope follows the timed forward passes of decoding."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from dataclasses import replace

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.cost_model import AdaptiveCostModel, CostModel

# Seconds by tokens, shaped like the SmolLM2 curve on 2 CPU threads.
MEASURED = CostModel({1: 0.0235, 2: 0.0242, 4: 0.0242, 8: 0.0278, 16: 0.0329, 32: 0.0466})
SIZES = [1, 2, 3, 4, 6, 8, 12, 16]


def observe_machine(model, base, ratio, passes, seed=0):
    """Feed passes timed on a machine where one token takes ``base`` seconds."""
    rng = np.random.default_rng(seed)
    for i in range(passes):
        tokens = SIZES[i % len(SIZES)]
        seconds = base * (1 + ratio * (MEASURED(tokens) - 1))
        model.observe(tokens, seconds * rng.normal(1.0, 0.02))


def test_starts_at_measured_curve():
    model = AdaptiveCostModel(MEASURED)
    assert model.ratio == 1.0
    for tokens in (1, 5, 16, 40):
        assert model(tokens) == pytest.approx(MEASURED(tokens))


def test_fits_steeper_slope():
    model = AdaptiveCostModel(MEASURED)
    observe_machine(model, base=0.0175, ratio=1.9, passes=600)
    assert model.ratio == pytest.approx(1.9, abs=0.15)
    assert model(16) == pytest.approx(1 + 1.9 * (MEASURED(16) - 1), abs=0.06)
    assert model(1) == 1.0


def test_follows_change():
    model = AdaptiveCostModel(MEASURED, memory=128)
    observe_machine(model, base=0.0235, ratio=1.0, passes=400)
    assert model.ratio == pytest.approx(1.0, abs=0.1)
    observe_machine(model, base=0.012, ratio=2.5, passes=800, seed=1)
    assert model.ratio == pytest.approx(2.5, abs=0.25)


def test_one_size_fixes_no_slope():
    model = AdaptiveCostModel(MEASURED)
    for _ in range(300):
        model.observe(8, 0.05)
    assert model.ratio == 1.0


def test_ratio_is_clamped():
    model = AdaptiveCostModel(MEASURED)
    for i in range(400):
        tokens = SIZES[i % len(SIZES)]
        model.observe(tokens, 0.001 + 10.0 * (MEASURED(tokens) - 1))
    assert model.ratio <= AdaptiveCostModel.MAX_RATIO


def test_bad_times_are_ignored():
    model = AdaptiveCostModel(MEASURED)
    model.observe(4, 0.0)
    model.observe(4, float("nan"))
    assert model.observed_passes == 0.0


@pytest.mark.parametrize(("memory", "prior"), [(0.5, 16.0), (256.0, -1.0)])
def test_bad_options_are_rejected(memory, prior):
    with pytest.raises(ValueError, match="memory must be at least 1"):
        AdaptiveCostModel(MEASURED, memory=memory, prior_passes=prior)


def test_stall_barely_moves_fit():
    model = AdaptiveCostModel(MEASURED)
    observe_machine(model, base=0.0235, ratio=1.0, passes=300)
    before = model.ratio
    model.observe(16, 1.0)  # a one-second stall, 30 times a normal pass
    assert model.ratio == pytest.approx(before, abs=0.1)
    model.observe(1, 1.0)
    assert model.ratio == pytest.approx(before, abs=0.1)


def test_infinite_time_is_ignored():
    model = AdaptiveCostModel(MEASURED)
    observe_machine(model, base=0.0235, ratio=1.0, passes=50)
    passes = model.observed_passes
    model.observe(8, float("inf"))
    assert model.observed_passes == passes
    assert np.isfinite(model(16))


def test_decoding_observes_steps(reader_generator, rag_prompts):
    generator = reader_generator
    prompt = rag_prompts[3]
    messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
    config = GenerationConfig(max_new_tokens=24)
    generator.step_cost  # measure or load the curve before replacing the refit
    generator._step_cost = AdaptiveCostModel(generator.cost_model)
    try:
        result = generator.generate(messages, list(prompt.passages), config=config)
        steps = result.stats.forward_passes - 1  # the prefill is not a tree pass
        decay = 1 - 1 / 256
        assert steps > 0
        assert generator.step_cost.observed_passes == pytest.approx((1 - decay**steps) / (1 - decay))

        generator.draft = replace(generator.draft, refit_cost_slope=False)
        passes = generator.step_cost.observed_passes
        generator.generate(messages, list(prompt.passages), config=config)
        assert generator.step_cost.observed_passes == passes
    finally:
        generator.draft = replace(generator.draft, refit_cost_slope=True)
        generator.forget_drafted_text()


class RecordingCost(AdaptiveCostModel):
    """The refit, keeping every observed (tokens, seconds) pair."""

    def __init__(self, measured) -> None:
        super().__init__(measured)
        self.observed: list[tuple[int, float]] = []

    def observe(self, tokens, seconds) -> None:
        self.observed.append((tokens, seconds))
        super().observe(tokens, seconds)


def test_step_time_includes_drafting(reader_generator, rag_prompts, monkeypatch):
    # Drafting is paid once per step, like the weight reads, so the refit must see it.
    generator = reader_generator
    prompt = rag_prompts[3]
    messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
    generator.step_cost  # measure or load the curve before replacing the refit
    generator._step_cost = recorder = RecordingCost(generator.cost_model)
    draft = generator._draft
    delay = 0.05

    def slow_draft(*args, **kwargs):
        time.sleep(delay)
        return draft(*args, **kwargs)

    monkeypatch.setattr(generator, "_draft", slow_draft)
    try:
        result = generator.generate(messages, list(prompt.passages), max_new_tokens=8)
    finally:
        generator.forget_drafted_text()
    assert len(recorder.observed) == result.stats.forward_passes - 1
    assert min(seconds for _, seconds in recorder.observed) >= delay


@pytest.mark.parametrize("value", [1, "yes", None])
def test_refit_switch_must_be_bool(value):
    with pytest.raises(ValueError, match="refit_cost_slope must be True or False"):
        DraftConfig(refit_cost_slope=value)


@pytest.mark.parametrize("tokens", [float("nan"), float("inf"), float("-inf"), 0, 0.5, -2])
def test_cost_rejects_invalid_size(tokens):
    message = f"tokens must be a finite number of at least 1, got {tokens!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        MEASURED(tokens)
    with pytest.raises(ValueError, match="tokens must be a finite number"):
        AdaptiveCostModel(MEASURED)(tokens)


def test_cost_accepts_fractional_sizes_above_one():
    # Batched curves are read at fractional widths, such as width * batch / 16.
    assert MEASURED(1) == 1.0
    assert 1.0 <= MEASURED(1.5) <= MEASURED(2)
