"""Tests for the best-first draft tree builder, tree size selection and the forward cost model."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader_rag.drafting.builder import build_draft_tree, choose_tree_size
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting import cost_model as cost_model_module
from reader_rag.drafting.cost_model import CostModel
from reader_rag.drafting.sources import Candidate, match_weight
from reader_rag.drafting.tree import DraftTree

SOURCE_NAMES = ("request", "datastore", "prompt")


@st.composite
def candidate_lists(draw):
    """Candidates of one to three sources over a small vocabulary, so that prefixes are shared."""
    vocabulary = st.integers(min_value=0, max_value=draw(st.integers(min_value=1, max_value=5)))
    by_source = []
    for name in SOURCE_NAMES[: draw(st.integers(min_value=1, max_value=3))]:
        candidates = draw(
            st.lists(
                st.builds(
                    Candidate,
                    tokens=st.lists(vocabulary, min_size=1, max_size=8).map(tuple),
                    weight=st.integers(min_value=1, max_value=14).map(match_weight),
                    match_length=st.integers(min_value=1, max_value=20),
                    source=st.just(name),
                ),
                max_size=10,
            )
        )
        by_source.append(candidates)
    return by_source


@st.composite
def calibrators(draw):
    """A calibrator with a random history of outcomes, so calibrated probabilities vary."""
    calibrator = AcceptanceCalibrator()
    outcomes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(SOURCE_NAMES),
                st.integers(min_value=1, max_value=20),
                st.integers(min_value=1, max_value=8),
                st.floats(min_value=0.0, max_value=1.0),
                st.booleans(),
            ),
            max_size=40,
        )
    )
    calibrator.update(
        (AcceptanceCalibrator.bucket(source, length, depth, ratio), accepted)
        for source, length, depth, ratio, accepted in outcomes
    )
    return calibrator


def cost_curves():
    """Monotone cost curves with cost(1) == 1, from flat to steep."""
    return st.lists(
        st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8
    ).map(_curve_from_steps)


def _curve_from_steps(steps: list[float]) -> CostModel:
    seconds = {1: 1.0}
    size, value = 1, 1.0
    for step in steps:
        size *= 2
        value += step * size
        seconds[size] = value
    return CostModel(seconds)


def node_paths(tree: DraftTree) -> list[tuple[int, ...]]:
    return [tuple(tree.token_ids[n] for n in tree.path(i)) for i in range(len(tree))]


def trie_prefixes(candidates_by_source, max_depth: int) -> set[tuple[int, ...]]:
    prefixes = set()
    for candidates in candidates_by_source:
        for candidate in candidates:
            tokens = candidate.tokens[:max_depth]
            prefixes.update(tokens[:k] for k in range(1, len(tokens) + 1))
    return prefixes


build_options = st.tuples(
    st.integers(min_value=0, max_value=40),  # max_nodes
    st.integers(min_value=1, max_value=8),  # max_depth
    st.sampled_from([0.0, 0.02, 0.1, 0.3]),  # probability_floor
)


# -- build_draft_tree ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(candidates=candidate_lists(), calibrator=calibrators(), options=build_options)
def test_tree_invariants(candidates, calibrator, options):
    max_nodes, max_depth, floor = options

    tree, buckets = build_draft_tree(candidates, calibrator, max_nodes, max_depth, floor)

    tree.validate()
    pairs = list(zip(tree.parents, tree.token_ids))
    assert all(parent < i for i, parent in enumerate(tree.parents)), "not topological"
    assert len(set(pairs)) == len(pairs), "a parent has two children with one token"
    for i, parent in enumerate(tree.parents):
        if parent >= 0:
            assert tree.scores[i] <= tree.scores[parent], f"node {i} scores above its parent"
    assert len(tree) <= max_nodes
    assert max(tree.depths(), default=0) <= max_depth
    assert len(buckets) == len(tree)
    assert all(score >= floor for score in tree.scores)


@settings(max_examples=300, deadline=None)
@given(candidates=candidate_lists(), calibrator=calibrators(), options=build_options)
def test_tree_best_first_order(candidates, calibrator, options):
    max_nodes, max_depth, floor = options

    tree, _ = build_draft_tree(candidates, calibrator, max_nodes, max_depth, floor)

    # choose_tree_size keeps a leading run of nodes, which must then be the most probable ones.
    assert tree.scores == sorted(tree.scores, reverse=True)


@settings(max_examples=300, deadline=None)
@given(candidates=candidate_lists(), calibrator=calibrators(), options=build_options)
def test_tree_paths_are_candidate_prefixes(candidates, calibrator, options):
    max_nodes, max_depth, floor = options

    tree, _ = build_draft_tree(candidates, calibrator, max_nodes, max_depth, floor)

    prefixes = trie_prefixes(candidates, max_depth)
    for i, path in enumerate(node_paths(tree)):
        assert path in prefixes, f"node {i} drafts {path}, which no candidate proposed"


@settings(max_examples=200, deadline=None)
@given(candidates=candidate_lists(), calibrator=calibrators(), max_depth=st.integers(1, 8))
def test_tree_complete_without_limits(candidates, calibrator, max_depth):
    tree, _ = build_draft_tree(candidates, calibrator, 10_000, max_depth, probability_floor=0.0)

    paths = node_paths(tree)
    assert set(paths) == trie_prefixes(candidates, max_depth)
    assert len(paths) == len(set(paths)), "one prefix was drafted twice"


@settings(max_examples=200, deadline=None)
@given(
    candidates=candidate_lists(),
    calibrator=calibrators(),
    options=build_options,
    cost=cost_curves(),
)
def test_tree_cut_by_step_cost(candidates, calibrator, options, cost):
    max_nodes, max_depth, floor = options
    full, full_buckets = build_draft_tree(candidates, calibrator, max_nodes, max_depth, floor)

    cut, buckets = build_draft_tree(candidates, calibrator, max_nodes, max_depth, floor, cost)

    size = choose_tree_size(full.scores, cost)
    cut.validate()
    assert len(cut) == size
    assert cut.token_ids == full.token_ids[:size]
    assert cut.parents == full.parents[:size]
    assert cut.scores == full.scores[:size]
    assert buckets == full_buckets[:size]


def test_tree_merges_sources():
    calibrator = AcceptanceCalibrator()
    candidates = [
        [Candidate((1, 2), 8.0, 3, "request")],
        [Candidate((1, 3), 8.0, 3, "datastore")],
    ]

    tree, _ = build_draft_tree(candidates, calibrator, 10, 4, 0.0)

    assert sorted(node_paths(tree)) == [(1,), (1, 2), (1, 3)]
    assert tree.token_ids.count(1) == 1


def test_tree_empty_inputs():
    calibrator = AcceptanceCalibrator()
    candidates = [[Candidate((1, 2), 8.0, 3, "request")]]

    no_budget, no_budget_buckets = build_draft_tree(candidates, calibrator, 0, 4, 0.0)
    no_candidates, _ = build_draft_tree([[], []], calibrator, 10, 4, 0.0)

    assert len(no_budget) == 0
    assert no_budget_buckets == []
    assert len(no_candidates) == 0


def test_tree_floor_drops_rare_branch():
    calibrator = AcceptanceCalibrator()
    # The raw ratios are 0.9 and 0.1, so the prior gives 0.63 and 0.07 before any outcome.
    candidates = [[Candidate((1,), 9.0, 2, "request"), Candidate((2,), 1.0, 2, "request")]]

    tree, _ = build_draft_tree(candidates, calibrator, 10, 4, probability_floor=0.1)

    assert tree.token_ids == [1]
    assert math.isclose(tree.scores[0], calibrator.prior_scale * 0.9)
    assert calibrator.prior_scale == 0.7


# -- choose_tree_size ---------------------------------------------------------------------------


def reference_tree_size(scores, step_cost) -> int:
    """Evaluate every size and return the smallest one with the highest rate."""
    expected = itertools.accumulate(scores, initial=1.0)  # summed in the builder's order
    rates = [total / step_cost(k + 1) for k, total in enumerate(expected)]
    return rates.index(max(rates))


def test_tree_size_steep_cost_is_zero():
    scores = [0.9, 0.8, 0.7, 0.5]

    # Every extra token costs as much as the first, and no node is certain to be accepted.
    assert choose_tree_size(scores, lambda n: float(n)) == 0


def test_tree_size_flat_cost_takes_all():
    scores = [0.9, 0.8, 0.7, 0.5, 0.1]

    assert choose_tree_size(scores, lambda n: 1.0) == len(scores)


def test_tree_size_moderate_cost():
    scores = [0.9, 0.5, 0.05]

    # Rates for k = 0..3 are 1.0, 1.9/1.1, 2.4/1.2 and 2.45/1.3, so two nodes are best.
    assert choose_tree_size(scores, lambda n: 1.0 + 0.1 * (n - 1)) == 2


def test_tree_size_empty_scores():
    assert choose_tree_size([], lambda n: 1.0) == 0


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=30).map(
        lambda values: sorted(values, reverse=True)
    ),
    cost=cost_curves(),
)
def test_tree_size_matches_reference(scores, cost):
    assert choose_tree_size(scores, cost) == reference_tree_size(scores, cost)


# -- CostModel ----------------------------------------------------------------------------------


def test_cost_model_interpolates():
    model = CostModel({1: 0.02, 4: 0.05, 8: 0.06})

    assert model(1) == pytest.approx(1.0)
    assert model(2) == pytest.approx(1.5)
    assert model(4) == pytest.approx(2.5)
    assert model(6) == pytest.approx(2.75)
    assert model(8) == pytest.approx(3.0)


def test_cost_model_extrapolates_last_slope():
    model = CostModel({1: 1.0, 4: 2.5, 8: 3.0})

    assert model(12) == pytest.approx(3.5)
    assert model(1) == pytest.approx(1.0)
    assert model.max_tokens == 8
    with pytest.raises(ValueError, match="at least 1, got 0"):
        model(0)


def test_cost_model_smooths_dips():
    model = CostModel({1: 1.0, 2: 0.8, 4: 1.2})

    assert model(2) == pytest.approx(1.0)
    assert model(3) == pytest.approx(1.1)


def test_cost_model_single_point():
    model = CostModel({1: 0.5})

    assert model(1) == pytest.approx(1.0)
    assert model(50) == pytest.approx(1.0)


def test_cost_model_requires_one_token():
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        CostModel({2: 1.0, 4: 2.0})


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.dictionaries(
        st.integers(min_value=2, max_value=128),
        st.floats(min_value=1e-4, max_value=10.0),
        max_size=8,
    ),
    base=st.floats(min_value=1e-4, max_value=10.0),
)
def test_cost_model_monotone(seconds, base):
    model = CostModel({1: base, **seconds})

    costs = [model(n) for n in range(1, 200)]

    assert costs[0] == pytest.approx(1.0)
    assert all(b >= a - 1e-12 for a, b in zip(costs, costs[1:])), "cost decreases with size"
    for n in seconds:
        assert model(n) >= seconds[n] / base - 1e-9, f"cost at measured size {n} is too low"


def test_cost_model_json_round_trip():
    model = CostModel({1: 0.04, 8: 0.07, 64: 0.19})

    copy = CostModel.from_json(json.loads(json.dumps(model.to_json())))

    assert copy.seconds == model.seconds
    assert [copy(n) for n in range(1, 80)] == [model(n) for n in range(1, 80)]


def test_cost_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("READER_RAG_CACHE", str(tmp_path))
    model = CostModel({1: 0.04, 8: 0.07})

    missing = CostModel.load_cached("model-a")
    model.save("model-a")
    loaded = CostModel.load_cached("model-a")
    other = CostModel.load_cached("model-b")

    assert missing is None
    assert loaded is not None
    assert loaded.seconds == model.seconds
    assert other is None
    assert CostModel.cache_path("model-a").is_relative_to(tmp_path)


class FakeClock:
    """A clock that advances only when a fake forward pass runs, by the duration it is given."""

    def __init__(self, durations: dict[int, list[float]]) -> None:
        self.now = 0.0
        self.durations = durations
        self.calls: list[int] = []

    def perf_counter(self) -> float:
        return self.now

    def forward(self, n: int) -> None:
        self.calls.append(n)
        self.now += self.durations[n].pop(0)


def test_cost_model_measure_keeps_fastest(monkeypatch):
    # The first duration of each size is its warmup run, which must not count.
    clock = FakeClock({1: [0.5, 3.0, 1.0, 2.0], 4: [0.5, 5.0, 7.0, 6.0]})
    monkeypatch.setattr(cost_model_module, "time", clock)

    model = CostModel.measure(clock.forward, sizes=(1, 4), rounds=3, warmup=1)

    assert clock.calls == [1, 4, 1, 4, 1, 4, 1, 4]
    assert model.seconds == {1: 1.0, 4: 5.0}
    assert model(4) == pytest.approx(5.0)
