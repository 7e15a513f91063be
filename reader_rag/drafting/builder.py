"""Best-first construction of one draft tree from the candidates of all draft sources."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reader_rag.drafting.calibration import AcceptanceCalibrator, Bucket
from reader_rag.drafting.recycling import RecyclingTable
from reader_rag.drafting.sources import Candidate
from reader_rag.drafting.tree import DraftTree

__all__ = [
    "RECYCLE_SOURCE",
    "Trie",
    "build_draft_tree",
    "choose_batch_tree_size",
    "choose_tree_size",
    "truncate_tree",
]

RECYCLE_SOURCE = "recycle"
"""Source name of nodes drafted from the :class:`RecyclingTable`."""


@dataclass
class Trie:
    """Prefix tree of one source's candidates; node 0 is the root (the last committed token)."""

    tokens: list[int] = field(default_factory=lambda: [-1])
    weights: list[float] = field(default_factory=lambda: [0.0])
    match_lengths: list[int] = field(default_factory=lambda: [0])
    children: list[dict[int, int]] = field(default_factory=lambda: [{}])

    @classmethod
    def from_candidates(cls, candidates: Sequence[Candidate], max_depth: int) -> Trie:
        """Insert each candidate's first ``max_depth`` tokens, adding its weight along the path."""
        trie = cls()
        for candidate in candidates:
            trie.weights[0] += candidate.weight
            node = 0
            for token in candidate.tokens[:max_depth]:
                child = trie.children[node].get(token)
                if child is None:
                    child = len(trie.tokens)
                    trie.children[node][token] = child
                    trie.tokens.append(token)
                    trie.weights.append(0.0)
                    trie.match_lengths.append(0)
                    trie.children.append({})
                trie.weights[child] += candidate.weight
                trie.match_lengths[child] = max(trie.match_lengths[child], candidate.match_length)
                node = child
        return trie


def build_draft_tree(
    candidates_by_source: Sequence[Sequence[Candidate]],
    calibrator: AcceptanceCalibrator,
    max_nodes: int,
    max_depth: int,
    probability_floor: float,
    step_cost: Callable[[int], float] | None = None,
    recycling: RecyclingTable | None = None,
    root_token: int | None = None,
    recycle_width: int = 4,
) -> tuple[DraftTree, list[Bucket]]:
    """Merge all candidates into one draft tree, most probable nodes first.

    Each source's candidates form a trie. A node's raw ratio is its weight over its parent's, the
    calibrator turns that into a conditional acceptance probability, and a path's probability is
    the product along it. Nodes are popped from one heap shared by all sources, so a source gets
    budget only where its nodes are more probable than the others'. A node that another source
    already drafted is merged: its children attach to the existing node.

    With a ``recycling`` table and the ``root_token`` (the last committed token), every node
    that enters the tree, and the root, also offers the ``recycle_width`` best next tokens that
    the model computed after its token in an earlier pass. Their raw ratio is the recorded probability, calibrated
    under the source name ``"recycle"`` with the rank as match length. They extend paths past
    the end of a suffix match and branch beside the suffix sources' proposals.

    When ``step_cost`` is given (the cost of a forward pass over n tokens, relative to one), the
    tree is cut to the size that maximizes expected tokens per unit of cost (see
    :func:`choose_tree_size`). Returns the tree and the calibration bucket of each node.
    """
    tree = DraftTree()
    buckets: list[Bucket] = []
    if max_nodes <= 0:
        return tree, buckets

    # (-path probability, tiebreak, source, trie node or token, tree parent, bucket, match length)
    # Source -1 marks a recycled token, whose fourth field is the token id itself.
    heap: list[tuple[float, int, int, int, int, Bucket, int]] = []
    tries = [Trie.from_candidates(c, max_depth) for c in candidates_by_source if c]
    sources = [c[0].source for c in candidates_by_source if c]
    counter = 0

    def push(probability: float, source: int, item: int, parent: int, bucket: Bucket, length: int):
        nonlocal counter
        if probability < probability_floor:
            return
        counter += 1
        heapq.heappush(heap, (-probability, counter, source, item, parent, bucket, length))

    def push_children(source: int, trie_node: int, tree_parent: int, path: float, depth: int):
        trie = tries[source]
        parent_weight = trie.weights[trie_node]
        for child in trie.children[trie_node].values():
            ratio = trie.weights[child] / parent_weight
            length = trie.match_lengths[child]
            bucket = calibrator.bucket(sources[source], length, depth, ratio)
            push(path * calibrator.probability(bucket, ratio), source, child, tree_parent, bucket, length)

    def push_recycled(token: int, tree_parent: int, path: float, depth: int):
        for rank, (child, ratio) in enumerate(recycling.next_tokens(token, recycle_width)):
            bucket = calibrator.bucket(RECYCLE_SOURCE, rank, depth, ratio)
            push(path * calibrator.probability(bucket, ratio), -1, child, tree_parent, bucket, rank)

    recycle = recycling is not None and root_token is not None
    for source in range(len(tries)):
        push_children(source, 0, -1, 1.0, 1)
    if recycle:
        push_recycled(root_token, -1, 1.0, 1)

    index_of: dict[tuple[int, int], int] = {}  # (tree parent, token) -> tree node
    depths: list[int] = []
    while heap and len(tree) < max_nodes:
        negative, _, source, item, tree_parent, bucket, length = heapq.heappop(heap)
        probability = -negative
        token = item if source < 0 else tries[source].tokens[item]
        existing = index_of.get((tree_parent, token))
        created = existing is None
        if created:
            name = RECYCLE_SOURCE if source < 0 else sources[source]
            existing = tree.add(token, tree_parent, probability, length, name)
            index_of[(tree_parent, token)] = existing
            buckets.append(bucket)
            depths.append(1 if tree_parent < 0 else depths[tree_parent] + 1)
        if depths[existing] >= max_depth:
            continue
        if source >= 0:
            push_children(source, item, existing, probability, depths[existing] + 1)
        if recycle and created:
            push_recycled(token, existing, probability, depths[existing] + 1)

    if step_cost is not None:
        size = choose_tree_size(tree.scores, step_cost)
        truncate_tree(tree, size)
        del buckets[size:]
    return tree, buckets


def choose_tree_size(scores: Sequence[float], step_cost: Callable[[int], float]) -> int:
    """Return the number k of leading nodes that maximizes expected tokens per unit of cost.

    With nodes in best-first order, the first k nodes form a valid tree, and their expected
    number of emitted tokens is ``1 + sum(scores[:k])`` (the bonus token plus each node's
    acceptance probability). One step over the root and k nodes costs ``step_cost(k + 1)``.
    """
    best_size = 0
    best_rate = 1.0 / step_cost(1)
    expected = 1.0
    for k, score in enumerate(scores, start=1):
        expected += score
        rate = expected / step_cost(k + 1)
        if rate > best_rate:
            best_size, best_rate = k, rate
    return best_size


def choose_batch_tree_size(
    score_lists: Sequence[Sequence[float]], width_cost: Callable[[int], float]
) -> int:
    """Return the node count k per request that maximizes expected tokens per unit of cost.

    One batched forward pass pads every tree to the same width, so a step over B requests with
    k nodes each costs ``width_cost(k + 1)``, the cost of a batched step of that width relative to
    any fixed unit, and emits ``sum(1 + sum(scores[:k]))`` tokens in expectation. k = 0 is plain
    batched decoding.
    """
    batch = len(score_lists)
    if batch == 0:
        return 0
    longest = max((len(scores) for scores in score_lists), default=0)
    best_size = 0
    best_rate = batch / width_cost(1)
    expected = float(batch)
    for k in range(1, longest + 1):
        expected += sum(scores[k - 1] for scores in score_lists if len(scores) >= k)
        rate = expected / width_cost(k + 1)
        if rate > best_rate:
            best_size, best_rate = k, rate
    return best_size


def truncate_tree(tree: DraftTree, size: int) -> None:
    """Keep the first ``size`` nodes; in best-first order they still form a tree."""
    for values in (tree.token_ids, tree.parents, tree.scores, tree.match_lengths, tree.sources):
        del values[size:]
