"""The draft tree: the contract between drafters and the verifier."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DraftTree"]


@dataclass
class DraftTree:
    """Candidate continuations of the committed sequence, as a tree of tokens.

    Node ``i`` proposes token ``token_ids[i]``. Its parent is node ``parents[i]``, or ``-1`` when
    it directly follows the last committed token (the *root*, which is not a node). Nodes are in
    topological order: ``parents[i] < i``. No two children of one parent carry the same token.

    ``scores[i]`` is the estimated probability that the verifier accepts the whole path from the
    root to node ``i``; scores never increase from a parent to its child. ``match_lengths[i]`` is
    the longest suffix match that proposed the node, and ``sources[i]`` names its draft source.
    An empty tree means a plain one-token step.
    """

    token_ids: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    match_lengths: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.token_ids)

    def add(self, token: int, parent: int, score: float, match_length: int, source: str) -> int:
        """Append a node and return its index."""
        self.token_ids.append(token)
        self.parents.append(parent)
        self.scores.append(score)
        self.match_lengths.append(match_length)
        self.sources.append(source)
        return len(self.token_ids) - 1

    def depths(self) -> list[int]:
        """Return each node's depth; children of the root have depth 1."""
        depths: list[int] = []
        for parent in self.parents:
            depths.append(1 if parent < 0 else depths[parent] + 1)
        return depths

    def children(self) -> list[dict[int, int]]:
        """Return, for the root (index 0) and each node ``i`` (index ``i + 1``), token -> child."""
        table: list[dict[int, int]] = [{} for _ in range(len(self) + 1)]
        for i, (token, parent) in enumerate(zip(self.token_ids, self.parents)):
            table[parent + 1][token] = i
        return table

    def path(self, node: int) -> list[int]:
        """Return the node indices from the root's child down to ``node``."""
        path = []
        while node >= 0:
            path.append(node)
            node = self.parents[node]
        path.reverse()
        return path

    def validate(self) -> None:
        """Raise ``ValueError`` if an invariant of the encoding is broken. For tests and debugging."""
        sizes = {
            len(self.parents),
            len(self.scores),
            len(self.match_lengths),
            len(self.sources),
        }
        if sizes != {len(self.token_ids)}:
            raise ValueError(f"field lengths differ: {sizes | {len(self.token_ids)}}")
        seen: set[tuple[int, int]] = set()
        for i, (token, parent) in enumerate(zip(self.token_ids, self.parents)):
            if not -1 <= parent < i:
                raise ValueError(f"node {i} has parent {parent}; parents must precede children")
            if (parent, token) in seen:
                raise ValueError(f"node {i} repeats token {token} under parent {parent}")
            seen.add((parent, token))
            if parent >= 0 and self.scores[i] > self.scores[parent] + 1e-9:
                raise ValueError(
                    f"node {i} scores {self.scores[i]} above its parent's {self.scores[parent]}"
                )
