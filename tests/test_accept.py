"""Tests for the acceptance walk over a draft tree."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reader_rag.drafting.tree import DraftTree
from reader_rag.verify.accept import walk_tree

VOCAB_SIZE = 16


def make_tree(tokens: list[int], parents: list[int]) -> DraftTree:
    tree = DraftTree()
    for token, parent in zip(tokens, parents):
        tree.add(token, parent, 1.0, 0, "test")
    tree.validate()
    return tree


def peaked_logits(argmax_by_row: list[int]) -> torch.Tensor:
    """Return logits ``(rows, VOCAB_SIZE)`` whose argmax in row r is ``argmax_by_row[r]``."""
    generator = torch.Generator().manual_seed(len(argmax_by_row))
    logits = torch.randn(len(argmax_by_row), VOCAB_SIZE, generator=generator)
    for row, token in enumerate(argmax_by_row):
        logits[row, token] = logits[row].max() + 1.0
    return logits


def greedy_walk(tree: DraftTree, logits: torch.Tensor):
    calls = []

    def choose(row: int, path: list[int]) -> int:
        calls.append((row, list(path)))
        return int(logits[row].argmax())

    path, bonus = walk_tree(tree.children(), choose)
    return path, bonus, calls


# -- hand-made trees ----------------------------------------------------------------------------


def test_walk_empty_tree():
    tree = DraftTree()
    logits = peaked_logits([7])

    path, bonus, calls = greedy_walk(tree, logits)

    assert path == []
    assert bonus == 7
    assert calls == [(0, [])]


def test_walk_chain_fully_accepted():
    tree = make_tree([5, 6, 7], [-1, 0, 1])
    logits = peaked_logits([5, 6, 7, 9])

    path, bonus, calls = greedy_walk(tree, logits)

    assert path == [0, 1, 2]
    assert bonus == 9
    assert calls == [(0, []), (1, [0]), (2, [0, 1]), (3, [0, 1, 2])]


def test_walk_chain_rejected_midway():
    tree = make_tree([5, 6, 7], [-1, 0, 1])
    logits = peaked_logits([5, 8, 7, 9])

    path, bonus, _ = greedy_walk(tree, logits)

    assert path == [0]
    assert bonus == 8


def test_walk_first_token_rejected():
    tree = make_tree([5, 6], [-1, 0])
    logits = peaked_logits([3, 6, 1])

    path, bonus, _ = greedy_walk(tree, logits)

    assert path == []
    assert bonus == 3


def test_walk_picks_second_branch():
    # Tree: r -> 5[0] -> 7[1] and r -> 6[2] -> 8[3].
    tree = make_tree([5, 7, 6, 8], [-1, 0, -1, 2])
    logits = peaked_logits([6, 7, 2, 8, 1])

    path, bonus, calls = greedy_walk(tree, logits)

    assert path == [2, 3]
    assert bonus == 1
    assert [row for row, _ in calls] == [0, 3, 4]


def test_walk_ignores_other_branch_rows():
    # Row 2 (node 1, on the branch not taken) proposes 8, which must not matter.
    tree = make_tree([5, 7, 6], [-1, 0, -1])
    logits = peaked_logits([6, 7, 8, 4])

    path, bonus, calls = greedy_walk(tree, logits)

    assert path == [2]
    assert bonus == 4
    assert 2 not in [row for row, _ in calls]


def test_walk_picks_deeper_sibling():
    # Tree: r -> 5[0] -> 6[1] and 5[0] -> 7[2] -> 9[3].
    tree = make_tree([5, 6, 7, 9], [-1, 0, 0, 2])
    logits = peaked_logits([5, 7, 0, 9, 3])

    path, bonus, _ = greedy_walk(tree, logits)

    assert path == [0, 2, 3]
    assert bonus == 3


# -- against a reference walk -------------------------------------------------------------------


@st.composite
def trees_with_choices(draw):
    """A random tree over a small vocabulary, and the target's token for every row."""
    size = draw(st.integers(min_value=0, max_value=24))
    vocabulary = draw(st.integers(min_value=1, max_value=4))
    tokens: list[int] = []
    parents: list[int] = []
    for _ in range(size):
        parent = draw(st.integers(min_value=-1, max_value=len(tokens) - 1))
        used = {token for token, p in zip(tokens, parents) if p == parent}
        free = [t for t in range(vocabulary) if t not in used]
        if not free:
            continue
        tokens.append(draw(st.sampled_from(free)))
        parents.append(parent)
    choices = draw(
        st.lists(
            st.integers(min_value=0, max_value=vocabulary),
            min_size=len(tokens) + 1,
            max_size=len(tokens) + 1,
        )
    )
    return make_tree(tokens, parents), choices


def reference_walk(tree: DraftTree, choices: list[int]) -> tuple[list[int], int]:
    """Follow the chosen tokens by scanning all nodes for a matching child."""
    path: list[int] = []
    current = -1
    while True:
        token = choices[current + 1]
        child = next(
            (
                i
                for i in range(len(tree))
                if tree.parents[i] == current and tree.token_ids[i] == token
            ),
            None,
        )
        if child is None:
            return path, token
        path.append(child)
        current = child


@settings(max_examples=500, deadline=None)
@given(case=trees_with_choices())
def test_walk_matches_reference(case):
    tree, choices = case
    logits = peaked_logits(choices)

    path, bonus, calls = greedy_walk(tree, logits)

    assert (path, bonus) == reference_walk(tree, choices)
    assert len(calls) == len(path) + 1
    for step, (row, seen_path) in enumerate(calls):
        assert seen_path == path[:step]
        assert row == (0 if step == 0 else path[step - 1] + 1)


@settings(max_examples=300, deadline=None)
@given(case=trees_with_choices())
def test_walk_path_is_branch(case):
    tree, choices = case

    path, bonus = walk_tree(tree.children(), lambda row, path: choices[row])

    if path:
        assert path == tree.path(path[-1]), "the accepted nodes are not one branch"
    for node in path:
        assert tree.token_ids[node] == choices[tree.parents[node] + 1]
    end_row = path[-1] + 1 if path else 0
    assert bonus == choices[end_row]
    assert bonus not in tree.children()[end_row]
