"""Draft sources: where candidate continuations come from.

A draft source turns the current context into weighted candidate continuations. The tree builder
merges the candidates of all sources into one draft tree. A source is created per request and
holds a reference to that request's state, so ``propose`` takes only the depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reader_rag.index.request_index import RequestIndex

__all__ = ["Candidate", "DraftSource", "RequestIndexSource", "match_weight"]


@dataclass(frozen=True)
class Candidate:
    """One proposed continuation of the committed sequence.

    ``tokens`` follow the last committed token. ``weight`` is the candidate's share in the counts
    of its source (occurrences, weighted by match length). ``match_length`` is the number of
    context tokens that matched where the continuation was found.
    """

    tokens: tuple[int, ...]
    weight: float
    match_length: int
    source: str


@runtime_checkable
class DraftSource(Protocol):
    """Anything that proposes continuations of the current request context."""

    name: str

    def propose(self, max_depth: int) -> Sequence[Candidate]:
        """Return candidate continuations of at most ``max_depth`` tokens each."""
        ...


def match_weight(length: int) -> float:
    """Weight of one occurrence found by a suffix match of ``length`` tokens.

    Each extra matching token roughly doubles the chance that the continuation is the one the
    model will write, so one long match outweighs many short ones. The exponent is capped so that
    weights stay finite and long matches of equal length count equally.
    """
    return float(2 ** min(length, 12))


class RequestIndexSource:
    """Continuations that followed earlier occurrences of the context's suffix in the request."""

    name = "request"

    def __init__(
        self,
        index: RequestIndex,
        min_match_length: int = 1,
        max_match_length: int = 32,
        max_occurrences: int = 64,
    ) -> None:
        self.index = index
        self.min_match_length = min_match_length
        self.max_match_length = max_match_length
        self.max_occurrences = max_occurrences

    def propose(self, max_depth: int) -> list[Candidate]:
        matches = self.index.find_matches(
            self.min_match_length, self.max_match_length, self.max_occurrences
        )
        candidates = []
        for match in matches:
            tokens = self.index.continuation(match.end, max_depth)
            if tokens:
                candidates.append(
                    Candidate(tuple(tokens), match_weight(match.length), match.length, self.name)
                )
        return candidates
