"""Property tests on periodic token streams, the hardest case for the drafting indexes.

RAG outputs and pathological documents repeat one phrase many times. These tests draw short
patterns repeated up to hundreds of times with a little noise, and check the request index,
the corpus datastore, the draft trees built from their candidates, and the tree attention
inputs against simple references written here.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reader_rag.drafting.builder import build_draft_tree
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.sources import RequestIndexSource
from reader_rag.drafting.tree import DraftTree
from reader_rag.index.datastore import CorpusDatastore
from reader_rag.index.request_index import RequestIndex, brute_force_matches
from reader_rag.verify.mask import tree_attention_inputs

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def periodic_streams(draw, max_repeats: int = 60) -> list[int]:
    """A pattern of 1 to 6 tokens repeated up to ``max_repeats`` times, with a few tokens
    changed, so that long matches and very frequent n-grams are both common."""
    pattern = draw(st.lists(st.integers(0, 5), min_size=1, max_size=6))
    tokens = pattern * draw(st.integers(1, max_repeats))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(tokens) - 1))
        tokens[position] = draw(st.integers(0, 7))
    return tokens


def split_stream(draw, tokens: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Split a stream into a document, a prompt of at least one token and the output."""
    first = draw(st.integers(0, len(tokens) - 1))
    second = draw(st.integers(first + 1, len(tokens)))
    return tokens[:first], tokens[first:second], tokens[second:]


# Request index


@PROPERTY_SETTINGS
@given(data=st.data(), key_length=st.integers(1, 4), max_length=st.integers(1, 40))
def test_request_index_periodic_equals_brute_force(data, key_length, max_length):
    document, prompt, output = split_stream(data.draw, data.draw(periodic_streams()))
    # Room for every position, so no key drops one and the index must be exact.
    index = RequestIndex(key_length=key_length, max_occurrences=10_000)
    index.add_document(document)
    index.extend(prompt)

    for token in [None, *output]:
        if token is not None:
            index.extend([token])
        tokens = [index.token_at(i) for i in range(len(index))]
        start = len(index) - index.live_length

        found = index.find_matches(1, max_length, limit=10_000)

        assert found == brute_force_matches(tokens, start, 1, max_length)


@PROPERTY_SETTINGS
@given(data=st.data(), max_occurrences=st.integers(1, 4))
def test_request_index_periodic_stays_bounded(data, max_occurrences):
    document, prompt, output = split_stream(data.draw, data.draw(periodic_streams(200)))
    index = RequestIndex(key_length=4, max_occurrences=max_occurrences)
    index.add_document(document)
    index.extend(prompt)
    index.extend(output)
    tokens = [index.token_at(i) for i in range(len(index))]
    start = len(index) - index.live_length

    found = index.find_matches(1, 32, limit=max_occurrences)
    exact = {match.end: match.length for match in brute_force_matches(tokens, start, 1, 32)}

    assert all(len(ends) <= 2 * max_occurrences for ends in index._table.values())
    assert len(found) <= max_occurrences
    for match in found:
        assert exact.get(match.end) == match.length, f"{match} is not a true match"


# Corpus datastore


def brute_longest_match(chunks: list[list[int]], context: list[int], max_length: int) -> int:
    """Return the length of the longest suffix of ``context`` found inside one chunk."""
    for length in range(min(max_length, len(context)), 0, -1):
        pattern = context[len(context) - length :]
        for chunk in chunks:
            if any(
                chunk[start : start + length] == pattern
                for start in range(len(chunk) - length + 1)
            ):
                return length
    return 0


@PROPERTY_SETTINGS
@given(
    chunks=st.lists(periodic_streams(40), min_size=1, max_size=4),
    context=periodic_streams(20),
    max_length=st.integers(1, 40),
)
def test_datastore_periodic_longest_match(chunks, context, max_length):
    datastore = CorpusDatastore.build(chunks, vocab_size=8)

    length, lo, hi = datastore.longest_match(context, max_length)

    assert length == brute_longest_match(chunks, context, max_length)
    if length:
        pattern = context[len(context) - length :]
        flat = datastore.tokens.tolist()
        for position in datastore.suffix_array[lo:hi].tolist():
            assert flat[position : position + length] == pattern
        expected = sum(
            chunk[start : start + length] == pattern
            for chunk in chunks
            for start in range(len(chunk) - length + 1)
        )
        assert hi - lo == expected


# Draft trees from index candidates


@PROPERTY_SETTINGS
@given(
    data=st.data(),
    max_nodes=st.integers(0, 64),
    max_depth=st.integers(1, 16),
    floor=st.sampled_from([0.0, 0.02, 0.2]),
)
def test_tree_from_periodic_candidates(data, max_nodes, max_depth, floor):
    document, prompt, output = split_stream(data.draw, data.draw(periodic_streams(100)))
    index = RequestIndex(key_length=4, max_occurrences=16)
    index.add_document(document)
    index.extend(prompt + output)
    candidates = RequestIndexSource(index, 1, 32, 16).propose(max_depth)

    tree, buckets = build_draft_tree(
        [candidates], AcceptanceCalibrator(), max_nodes, max_depth, floor
    )

    tree.validate()
    assert len(tree) <= max_nodes
    assert len(buckets) == len(tree)
    assert all(parent < node for node, parent in enumerate(tree.parents)), "not topological"
    siblings = list(zip(tree.parents, tree.token_ids))
    assert len(set(siblings)) == len(siblings), "a node has two children with one token"
    assert max(tree.depths(), default=0) <= max_depth
    continuations = {c.tokens[:max_depth] for c in candidates}
    for node in range(len(tree)):
        branch = tuple(tree.token_ids[n] for n in tree.path(node))
        assert any(c[: len(branch)] == branch for c in continuations), f"{branch} was not drafted"


# Tree attention inputs


@st.composite
def random_trees(draw) -> DraftTree:
    tree = DraftTree()
    for _ in range(draw(st.integers(0, 20))):
        parent = draw(st.integers(-1, len(tree) - 1))
        used = {t for t, p in zip(tree.token_ids, tree.parents) if p == parent}
        token = draw(st.integers(0, 9).filter(lambda t: t not in used))
        tree.add(token, parent, 1.0, 0, "test")
    return tree


@PROPERTY_SETTINGS
@given(tree=random_trees(), prefix_length=st.integers(0, 50))
def test_tree_mask_follows_ancestors(tree, prefix_length):
    mask, position_ids = tree_attention_inputs(tree, prefix_length, torch.float32, "cpu")
    allowed = (mask[0, 0] == 0).tolist()
    depths = tree.depths()

    # Row 0 is the root (the last emitted token), rows 1.. are the tree's nodes.
    assert position_ids[0].tolist() == [prefix_length + d for d in [0, *depths]]
    for row in range(len(tree) + 1):
        visible = {col - prefix_length for col in range(len(allowed[row])) if allowed[row][col]}
        prefix_visible = {c for c in visible if c < 0}
        assert len(prefix_visible) == prefix_length, f"row {row} does not see the whole prefix"
        own = {0} | {node + 1 for node in (tree.path(row - 1) if row else [])}
        assert visible - prefix_visible == own, f"row {row} sees {visible}, expected {own}"
