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

__all__ = [
    "Candidate",
    "CorpusSource",
    "DraftSource",
    "HistorySource",
    "RequestIndexSource",
    "match_weight",
]


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

        self.last_match_length = 0
        """Longest match found by the last ``propose`` call; 0 when there was none."""

    def propose(self, max_depth: int) -> list[Candidate]:
        matches = self.index.find_matches(
            self.min_match_length, self.max_match_length, self.max_occurrences
        )
        self.last_match_length = matches[0].length if matches else 0
        candidates = []
        for match in matches:
            tokens = self.index.continuation(match.end, max_depth)
            if tokens:
                candidates.append(
                    Candidate(tuple(tokens), match_weight(match.length), match.length, self.name)
                )
        return candidates


class CorpusSource:
    """Continuations found in the corpus datastore of a whole document store.

    The datastore is consulted only when the request's own index matched fewer than
    ``skip_above`` tokens, because a long match inside the request predicts better than the
    corpus and each lookup and its candidates cost about a millisecond per step. In a replay of
    20 Spec-Bench RAG outputs, a threshold of 4 tokens skipped about a fifth more lookups than 8
    and kept 51 of the 53 positions where only the corpus had the right token. ``max_occurrences``
    caps the candidates of one lookup, sampled evenly over the matches.
    """

    name = "corpus"

    def __init__(
        self,
        datastore,
        request_source: RequestIndexSource,
        min_match_length: int = 2,
        max_match_length: int = 32,
        max_occurrences: int = 16,
        skip_above: int = 4,
    ) -> None:
        self.datastore = datastore
        self.request_source = request_source
        self.min_match_length = min_match_length
        self.max_match_length = max_match_length
        self.max_occurrences = max_occurrences
        self.skip_above = skip_above

    def propose(self, max_depth: int) -> list[Candidate]:
        datastore = self.current_datastore()
        if datastore is None or self.request_source.last_match_length >= self.skip_above:
            return []
        context = self.request_source.index.tail(self.max_match_length)
        length, lo, hi = datastore.longest_match(context, self.max_match_length)
        if length < self.min_match_length:
            return []
        continuations = datastore.continuations(lo, hi, length, max_depth, self.max_occurrences)
        weight = match_weight(length)
        return [Candidate(tuple(c), weight, length, self.name) for c in continuations if c]

    def current_datastore(self):
        """Return the datastore to search in this step."""
        return self.datastore


class HistorySource(CorpusSource):
    """Continuations found in the generator's earlier outputs (a :class:`ResponseHistory`).

    The history's suffix array is replaced whenever an output is recorded, so each step searches
    the snapshot current at that moment.
    """

    name = "history"

    def __init__(self, history, request_source: RequestIndexSource, **options) -> None:
        super().__init__(None, request_source, **options)
        self.history = history

    def current_datastore(self):
        return self.history.datastore
