"""Tests for tree attention masks, position ids and the KV commit, against real models.

A tree forward pass over the committed prefix must give every node the logits of a plain causal
forward pass over the prefix, the root and the node's branch. Committing a branch must leave the
cache as if that branch had been decoded token by token.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

from reader_rag.drafting.tree import DraftTree
from reader_rag.evaluation.datasets import load_dataset
from reader_rag.verify.cache import commit_kv, new_cache
from reader_rag.verify.mask import ancestor_matrix, tree_attention_inputs

# The fp32 logits of SmolLM2 and Gemma 3 reach 20-30 in magnitude, and a different matmul shape
# changed them by up to 5e-5 on the prompts below (CPU, torch 2.13).
ATOL = 1e-4

SMOLLM2_PREFIX_LENGTH = 48
# Longer than Gemma 3's 512-token sliding window, so the tree rows must hide the oldest keys.
GEMMA_PREFIX_LENGTH = 600


def make_tree(tokens: list[int], parents: list[int]) -> DraftTree:
    tree = DraftTree()
    for token, parent in zip(tokens, parents):
        tree.add(token, parent, 1.0, 0, "test")
    tree.validate()
    return tree


# Shape of the tree used below (root r, node index in brackets):
#   r -> a[0] -> b[1] -> f[5]
#          \---> c[2]
#   r -> d[3] -> e[4]
TREE_PARENTS = [-1, 0, 0, -1, 3, 1]
TREE_DEPTHS = [0, 1, 2, 2, 1, 2, 3]  # row 0 is the root
TREE_ANCESTORS = [
    [1, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0],
    [1, 1, 0, 1, 0, 0, 0],
    [1, 0, 0, 0, 1, 0, 0],
    [1, 0, 0, 0, 1, 1, 0],
    [1, 1, 1, 0, 0, 0, 1],
]


def leaves(tree: DraftTree) -> list[int]:
    parents = set(tree.parents)
    return [i for i in range(len(tree)) if i not in parents]


def rag_token_ids(generator, length: int) -> list[int]:
    """Return the first ``length`` token ids of a real Spec-Bench RAG prompt."""
    prompt = load_dataset("specbench-rag", limit=1)[0].prompt
    ids = generator.encode_prompt(prompt)
    assert len(ids) >= length, f"the prompt has only {len(ids)} tokens"
    return ids[:length]


def tree_from_text(token_ids: list[int], parents: list[int]) -> DraftTree:
    """Build a tree of the given shape from real tokens, siblings made distinct."""
    tokens = []
    for i, parent in enumerate(parents):
        siblings = {tokens[j] for j in range(i) if parents[j] == parent}
        token = next(t for t in token_ids[i:] if t not in siblings)
        tokens.append(token)
    return make_tree(tokens, parents)


# The generator decodes with new_cache(), whose layers write into a preallocated buffer.
CACHE_FACTORIES = {"dynamic": DynamicCache, "growable": new_cache}


def prefill(model, prefix: list[int], cache_factory=DynamicCache):
    cache = cache_factory()
    model(input_ids=torch.tensor([prefix]), cache=cache, use_cache=True)
    return cache


def tree_logits(model, cache, tree, root, prefix_length, sliding_window=None, full_only=False):
    """Run one tree forward pass on ``cache`` and return the logits ``(q, vocab)``."""
    mask, position_ids = tree_attention_inputs(
        tree, prefix_length, torch.float32, "cpu", sliding_window
    )
    if full_only:
        mask = mask["full_attention"]
    input_ids = torch.tensor([[root, *tree.token_ids]])
    output = model(
        input_ids=input_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
        use_cache=True,
    )
    return output.logits[0]


def branch_logits(model, prefix: list[int], root: int, tree: DraftTree, leaf: int):
    """Return the logits of a plain causal pass over the prefix, the root and a branch."""
    branch = [tree.token_ids[n] for n in tree.path(leaf)]
    logits = model(input_ids=torch.tensor([prefix + [root] + branch])).logits[0]
    return logits[len(prefix) :]


def rows_of(tree: DraftTree, leaf: int) -> list[int]:
    return [0, *(node + 1 for node in tree.path(leaf))]


# -- pure functions -----------------------------------------------------------------------------


def test_ancestor_matrix_branches():
    tree = make_tree([10, 11, 12, 13, 14, 15], TREE_PARENTS)

    assert ancestor_matrix(tree).tolist() == [[bool(v) for v in row] for row in TREE_ANCESTORS]


def test_ancestor_matrix_chain():
    tree = make_tree([5, 6, 7], [-1, 0, 1])

    expected = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    assert torch.equal(ancestor_matrix(tree), expected)


def test_ancestor_matrix_empty_tree():
    assert ancestor_matrix(DraftTree()).tolist() == [[True]]


def test_position_ids_prefix_plus_depth():
    tree = make_tree([10, 11, 12, 13, 14, 15], TREE_PARENTS)

    _, position_ids = tree_attention_inputs(tree, 37, torch.float32)

    assert position_ids.tolist() == [[37 + depth for depth in TREE_DEPTHS]]


def test_mask_layout():
    tree = make_tree([10, 11, 12, 13, 14, 15], TREE_PARENTS)
    minimum = torch.finfo(torch.float32).min

    mask, _ = tree_attention_inputs(tree, 5, torch.float32)

    assert mask.shape == (1, 1, 7, 12)
    assert mask.dtype == torch.float32
    assert torch.all(mask[0, 0, :, :5] == 0)
    expected = torch.tensor(TREE_ANCESTORS, dtype=torch.bool)
    assert torch.equal(mask[0, 0, :, 5:] == 0, expected)
    assert torch.all(mask[0, 0, :, 5:][~expected] == minimum)


def test_sliding_mask_layout():
    tree = make_tree([10, 11, 12, 13, 14, 15], TREE_PARENTS)
    window, prefix_length = 8, 20

    masks, position_ids = tree_attention_inputs(tree, prefix_length, torch.float32, "cpu", window)
    plain, _ = tree_attention_inputs(tree, prefix_length, torch.float32)

    assert set(masks) == {"full_attention", "sliding_attention"}
    assert torch.equal(masks["full_attention"], plain)
    sliding = masks["sliding_attention"][0, 0] == 0
    positions = position_ids[0].tolist()
    for row, query in enumerate(positions):
        visible = [c for c in range(prefix_length) if sliding[row, c]]
        assert visible == list(range(query - window + 1, prefix_length)), f"row {row}"
    assert torch.equal(sliding[:, prefix_length:], plain[0, 0, :, prefix_length:] == 0)


# -- tree forward pass against sequential runs --------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_case(smollm2_generator):
    """SmolLM2 with a real prefix, its prefilled cache, a root token and the branching tree."""
    ids = rag_token_ids(smollm2_generator, SMOLLM2_PREFIX_LENGTH + 12)
    prefix, root = ids[:SMOLLM2_PREFIX_LENGTH], ids[SMOLLM2_PREFIX_LENGTH]
    tree = tree_from_text(ids[SMOLLM2_PREFIX_LENGTH + 1 :], TREE_PARENTS)
    model = smollm2_generator.model
    with torch.inference_mode():
        cache = prefill(model, prefix)
    return model, prefix, root, tree, cache


@pytest.mark.slow
def test_tree_logits_match_branches(smollm2_case):
    model, prefix, root, tree, cache = smollm2_case

    with torch.inference_mode():
        logits = tree_logits(model, copy.deepcopy(cache), tree, root, len(prefix))
        for leaf in leaves(tree):
            expected = branch_logits(model, prefix, root, tree, leaf)
            rows = rows_of(tree, leaf)
            torch.testing.assert_close(logits[rows], expected, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [[], [0, 1], [3, 4], [0, 2], [0, 1, 5]],
    ids=["root-only", "first-branch", "second-branch", "inner-sibling", "deep-branch"],
)
@pytest.mark.parametrize("cache_kind", list(CACHE_FACTORIES))
def test_commit_kv_matches_sequential_cache(smollm2_case, path, cache_kind):
    model, prefix, root, tree, _ = smollm2_case
    accepted = [root, *(tree.token_ids[node] for node in path)]
    next_token = tree.token_ids[0]
    prefix_length = len(prefix)

    with torch.inference_mode():
        cache = prefill(model, prefix, CACHE_FACTORIES[cache_kind])
        tree_logits(model, cache, tree, root, prefix_length)
        commit_kv(cache, prefix_length, [0, *(node + 1 for node in path)])
        position = torch.tensor([[prefix_length + len(accepted)]])
        logits = model(
            input_ids=torch.tensor([[next_token]]), position_ids=position, cache=cache,
            use_cache=True,
        ).logits[0, -1]

        sequential = prefill(model, prefix + accepted)
        expected = model(
            input_ids=torch.tensor([[next_token]]), cache=sequential, use_cache=True
        ).logits[0, -1]
        plain = model(input_ids=torch.tensor([prefix + accepted + [next_token]])).logits[0, -1]

    assert cache.get_seq_length() == prefix_length + len(accepted) + 1
    for layer, reference in zip(cache.layers, sequential.layers):
        torch.testing.assert_close(layer.keys, reference.keys, atol=ATOL, rtol=0)
        torch.testing.assert_close(layer.values, reference.values, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, plain, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("cache_kind", list(CACHE_FACTORIES))
def test_commit_kv_then_tree_pass(smollm2_case, cache_kind):
    """A second tree pass after committing a non-leading branch still matches sequential runs."""
    model, prefix, root, tree, _ = smollm2_case
    # Node d[3] is accepted and e, its child's token, is the bonus token. The generator keeps
    # the bonus token out of the cache, because it is the root of the next tree.
    path = [3]
    committed = prefix + [root, tree.token_ids[3]]
    second_root = tree.token_ids[4]

    with torch.inference_mode():
        cache = prefill(model, prefix, CACHE_FACTORIES[cache_kind])
        tree_logits(model, cache, tree, root, len(prefix))
        commit_kv(cache, len(prefix), [0, *(node + 1 for node in path)])
        logits = tree_logits(model, cache, tree, second_root, len(committed))
        for leaf in leaves(tree):
            expected = branch_logits(model, committed, second_root, tree, leaf)
            torch.testing.assert_close(logits[rows_of(tree, leaf)], expected, atol=ATOL, rtol=0)


# -- Gemma 3: sliding-window layers -------------------------------------------------------------

# Two branches keep the number of 600-token sequential passes small:
#   r -> a[0] -> b[1] -> c[2]
#   r -> d[3] -> e[4]
GEMMA_PARENTS = [-1, 0, 1, -1, 3]


@pytest.mark.slow
def test_gemma_sliding_mask_matches_branches(gemma_generator):
    model = gemma_generator.model
    window = gemma_generator.sliding_window
    ids = rag_token_ids(gemma_generator, GEMMA_PREFIX_LENGTH + 8)
    prefix, root = ids[:GEMMA_PREFIX_LENGTH], ids[GEMMA_PREFIX_LENGTH]
    tree = tree_from_text(ids[GEMMA_PREFIX_LENGTH + 1 :], GEMMA_PARENTS)

    with torch.inference_mode():
        cache = prefill(model, prefix)
        full_only = tree_logits(model, copy.deepcopy(cache), tree, root, len(prefix), window, True)
        logits = tree_logits(model, cache, tree, root, len(prefix), window)
        expected = {leaf: branch_logits(model, prefix, root, tree, leaf) for leaf in leaves(tree)}

    assert window == 512
    for leaf, reference in expected.items():
        torch.testing.assert_close(logits[rows_of(tree, leaf)], reference, atol=ATOL, rtol=0)
    # Without the sliding mask the rows see keys outside the window and the logits move far
    # beyond the tolerance, which shows that the comparison above tests the sliding mask.
    for leaf, reference in expected.items():
        gap = (full_only[rows_of(tree, leaf)] - reference).abs().max().item()
        assert gap > 100 * ATOL, f"branch to node {leaf} ignores the sliding window"
