"""Per-request suffix index over token ids.

The index holds the token ids of the retrieved documents, then the prompt and the generated
output (the *live segment*). It answers one question at every decoding step: where did the last
few tokens of the live segment occur before, and what followed them there.

Layout: ``tokens`` is one flat list. Each document is followed by a unique negative separator, so
no match and no continuation crosses a document boundary. Every n-gram of length 1 to
``key_length`` that contains no separator is a key of a hash table whose value lists the positions
where that n-gram ends, oldest first. Appending a token adds ``key_length`` entries, so extension
costs O(key_length) per token and the index is never rebuilt. Matches longer than ``key_length``
are measured by comparing tokens backwards from the candidate positions of the longest key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reader_rag.token_ids import as_token_ids

__all__ = ["Match", "RequestIndex", "brute_force_matches"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Match:
    """An earlier occurrence of the live segment's suffix.

    ``end`` is the position of the occurrence's last token in the index, so its continuation
    starts at ``end + 1``. ``length`` is the number of matching tokens, capped by the query's
    ``max_length``.
    """

    end: int
    length: int


class RequestIndex:
    """Incremental n-gram index over the documents, prompt and output of one request.

    Args:
        key_length: Longest n-gram stored as a hash key. Longer matches are still found, by
            extending the candidates of the longest key.
        max_occurrences: Each key keeps at least this many of its most recent end positions, and
            at most twice as many. Older positions are dropped, which bounds memory and query time
            on repetitive text.
    """

    def __init__(self, key_length: int = 4, max_occurrences: int = 64) -> None:
        if key_length < 1:
            raise ValueError(f"key_length must be at least 1, got {key_length}")
        if max_occurrences < 1:
            raise ValueError(f"max_occurrences must be at least 1, got {max_occurrences}")
        self.key_length = key_length
        self.max_occurrences = max_occurrences
        self._tokens: list[int] = []
        self._table: dict[tuple[int, ...], list[int]] = {}
        self._segment_start = 0
        self._num_documents = 0

    # -- building -------------------------------------------------------------------------------

    def add_document(self, token_ids: Iterable[int]) -> None:
        """Add one closed document. Documents must be added before the live segment starts.

        Raises:
            ValueError: a token id is not an integer (a float, for one) or is negative.
        """
        if len(self._tokens) != self._segment_start:
            raise RuntimeError(
                "add_document() was called after extend(); add all documents before the prompt"
            )
        self._append(as_token_ids(token_ids, "document token ids"))
        if len(self._tokens) == self._segment_start:
            return  # an empty document adds nothing, not even a separator
        self._num_documents += 1
        self._tokens.append(-self._num_documents)
        self._segment_start = len(self._tokens)

    def extend(self, token_ids: Iterable[int]) -> None:
        """Append tokens to the live segment (the prompt, then each accepted output token)."""
        self._append(token_ids)

    def _append(self, token_ids: Iterable[int]) -> None:
        tokens = self._tokens
        table = self._table
        key_length = self.key_length
        cap = 2 * self.max_occurrences
        for token in token_ids:
            token = int(token)
            if token < 0:
                raise ValueError(f"token ids must be non-negative, got {token}")
            tokens.append(token)
            end = len(tokens) - 1
            longest = min(key_length, end - self._segment_start + 1)
            for n in range(1, longest + 1):
                key = tuple(tokens[end - n + 1 : end + 1])
                positions = table.get(key)
                if positions is None:
                    table[key] = [end]
                else:
                    positions.append(end)
                    if len(positions) > cap:
                        # Amortized O(1): one slice every max_occurrences appends.
                        del positions[: len(positions) - self.max_occurrences]

    # -- queries --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def live_length(self) -> int:
        """Number of tokens in the live segment."""
        return len(self._tokens) - self._segment_start

    @property
    def num_keys(self) -> int:
        """Number of n-gram keys stored; memory grows with it."""
        return len(self._table)

    def tail(self, length: int) -> list[int]:
        """Return the last ``length`` tokens of the live segment (fewer if it is shorter)."""
        start = max(self._segment_start, len(self._tokens) - length)
        return self._tokens[start:]

    def token_at(self, position: int) -> int:
        """Return the token at ``position``; separators are negative."""
        return self._tokens[position]

    def continuation(self, end: int, depth: int) -> list[int]:
        """Return up to ``depth`` tokens after position ``end``, stopping at a separator."""
        out = self._tokens[end + 1 : end + 1 + depth]
        for i, token in enumerate(out):
            if token < 0:
                return out[:i]
        return out

    def find_matches(
        self, min_length: int = 1, max_length: int = 32, limit: int = 64
    ) -> list[Match]:
        """Find earlier occurrences of the live segment's suffix.

        Returns at most ``limit`` matches of length >= ``min_length``, sorted by length (capped at
        ``max_length``) and then by recency, both descending. The last token of the live segment
        is never its own match. The result equals :func:`brute_force_matches` as long as no key
        has had positions dropped (fewer than ``max_occurrences`` occurrences of any n-gram);
        beyond that, only the retained recent positions are considered.
        """
        tokens = self._tokens
        end = len(tokens) - 1
        available = end - self._segment_start + 1
        if available < min_length or available < 1:
            return []
        top = min(self.key_length, available, max_length)
        # A match longer than key_length is found through its last key_length tokens, so a
        # min_length above top still searches the top key and filters by the extended length.
        lowest = min(min_length, top)
        seen: set[int] = set()
        results: list[Match] = []
        for n in range(top, lowest - 1, -1):
            positions = self._table.get(tuple(tokens[end - n + 1 : end + 1]))
            if not positions:
                continue
            level: list[Match] = []
            for position in reversed(positions):
                if position == end or position in seen:
                    continue
                seen.add(position)
                length = self._extend_match(position, end, n, max_length)
                if length >= min_length:
                    level.append(Match(position, length))
            # Within one key, lengths can exceed n only at the top level or where a longer key
            # dropped old positions, so sort each level by length, then recency.
            level.sort(key=lambda m: (m.length, m.end), reverse=True)
            results.extend(level)
            if len(results) >= limit:
                break
        results.sort(key=lambda m: (m.length, m.end), reverse=True)
        return results[:limit]

    def _extend_match(self, position: int, end: int, known: int, max_length: int) -> int:
        """Count matching tokens backwards from ``position`` and ``end``, given ``known`` match."""
        tokens = self._tokens
        length = known
        floor = self._segment_start
        while length < max_length:
            i = position - length
            j = end - length
            if i < 0 or j < floor:
                break
            token = tokens[i]
            if token < 0 or token != tokens[j]:
                break
            length += 1
        return length


def brute_force_matches(
    tokens: Sequence[int],
    segment_start: int,
    min_length: int = 1,
    max_length: int = 32,
) -> list[Match]:
    """Reference search for tests: every earlier occurrence of the suffix, by direct comparison.

    ``tokens`` is the index's flat token list (separators negative) and ``segment_start`` the
    first position of the live segment. Returns all matches sorted as
    :meth:`RequestIndex.find_matches` sorts them, without a limit.
    """
    end = len(tokens) - 1
    matches = []
    for position in range(end):
        length = 0
        while length < max_length:
            i = position - length
            j = end - length
            if i < 0 or j < segment_start or tokens[i] < 0 or tokens[i] != tokens[j]:
                break
            length += 1
        if length >= min_length:
            matches.append(Match(position, length))
    matches.sort(key=lambda m: (m.length, m.end), reverse=True)
    return matches
