"""Tests for the per-request suffix index, checked against the brute-force reference search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reader_rag.index.request_index import Match, RequestIndex, brute_force_matches


def flat_tokens(index: RequestIndex) -> list[int]:
    """Return the index's flat token list (separators negative) through its public accessors."""
    return [index.token_at(position) for position in range(len(index))]


def segment_start(index: RequestIndex) -> int:
    return len(index) - index.live_length


def backward_match_length(tokens: list[int], start: int, position: int, max_length: int) -> int:
    """Count equal tokens backwards from ``position`` and the last token, as the index defines a
    match: no separator on the candidate side, and the query side stays in the live segment."""
    end = len(tokens) - 1
    length = 0
    while length < max_length:
        i, j = position - length, end - length
        if i < 0 or j < start or tokens[i] < 0 or tokens[i] != tokens[j]:
            break
        length += 1
    return length


@st.composite
def request_streams(draw):
    """Documents, a prompt and output chunks over a small alphabet, so that n-grams repeat."""
    alphabet = st.integers(min_value=0, max_value=draw(st.integers(min_value=0, max_value=3)))
    documents = draw(st.lists(st.lists(alphabet, max_size=25), max_size=4))
    prompt = draw(st.lists(alphabet, min_size=1, max_size=12))
    chunks = draw(st.lists(st.lists(alphabet, min_size=1, max_size=4), max_size=8))
    return documents, prompt, chunks


query_options = st.tuples(
    st.integers(min_value=1, max_value=4),  # key_length
    st.integers(min_value=1, max_value=6),  # min_length
    st.integers(min_value=1, max_value=12),  # max_length
    st.integers(min_value=1, max_value=80),  # limit
)


def build_index(documents, prompt, key_length: int, max_occurrences: int) -> RequestIndex:
    index = RequestIndex(key_length=key_length, max_occurrences=max_occurrences)
    for document in documents:
        index.add_document(document)
    index.extend(prompt)
    return index


# -- agreement with the brute-force reference ---------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=request_streams(), options=query_options)
def test_find_matches_equals_brute_force(stream, options):
    documents, prompt, chunks = stream
    key_length, min_length, max_length, limit = options
    # Enough room that no key ever drops a position, so the index must be exact.
    index = build_index(documents, prompt, key_length, max_occurrences=10_000)

    for chunk in [[], *chunks]:
        index.extend(chunk)
        tokens = flat_tokens(index)
        expected = brute_force_matches(tokens, segment_start(index), min_length, max_length)
        found = index.find_matches(min_length, max_length, limit)
        assert found == expected[:limit], f"tokens={tokens}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=request_streams(),
    options=query_options,
    max_occurrences=st.integers(min_value=1, max_value=3),
)
def test_find_matches_sound_when_capped(stream, options, max_occurrences):
    documents, prompt, chunks = stream
    key_length, min_length, max_length, limit = options
    index = build_index(documents, prompt, key_length, max_occurrences)

    for chunk in [[], *chunks]:
        index.extend(chunk)
        tokens = flat_tokens(index)
        start = segment_start(index)
        found = index.find_matches(min_length, max_length, limit)
        order = sorted(found, key=lambda m: (m.length, m.end), reverse=True)

        assert len(found) <= limit
        assert found == order, "matches are not sorted by length, then recency"
        assert len({m.end for m in found}) == len(found), "a position is reported twice"
        for match in found:
            assert match.end < len(tokens) - 1, "the last token matched itself"
            true_length = backward_match_length(tokens, start, match.end, max_length)
            assert match.length == true_length, f"wrong length for {match}, tokens={tokens}"
            assert match.length >= min_length


@settings(max_examples=200, deadline=None)
@given(stream=request_streams(), options=query_options)
def test_matches_stay_inside_documents(stream, options):
    documents, prompt, chunks = stream
    key_length, min_length, max_length, limit = options
    index = build_index(documents, prompt, key_length, max_occurrences=10_000)
    for chunk in chunks:
        index.extend(chunk)
    tokens = flat_tokens(index)

    for match in index.find_matches(min_length, max_length, limit):
        span = tokens[match.end - match.length + 1 : match.end + 1]
        assert len(span) == match.length, f"{match} starts before position 0"
        assert all(token >= 0 for token in span), f"{match} crosses a separator: {span}"
        assert match.length <= index.live_length, f"{match} is longer than the live segment"


@settings(max_examples=200, deadline=None)
@given(stream=request_streams(), depth=st.integers(min_value=1, max_value=10))
def test_continuation_stops_at_separator(stream, depth):
    documents, prompt, chunks = stream
    index = build_index(documents, prompt, key_length=3, max_occurrences=10_000)
    for chunk in chunks:
        index.extend(chunk)
    tokens = flat_tokens(index)

    for end in range(len(tokens)):
        continuation = index.continuation(end, depth)
        expected = []
        for token in tokens[end + 1 : end + 1 + depth]:
            if token < 0:
                break
            expected.append(token)
        assert continuation == expected, f"end={end}, tokens={tokens}"


# -- hand-made cases ----------------------------------------------------------------------------


def test_continuation_ends_at_document_end():
    index = RequestIndex(key_length=4)
    index.add_document([1, 2, 3])  # positions 0-2, separator at 3
    index.add_document([1, 2, 4])  # positions 4-6, separator at 7
    index.extend([1, 2])  # positions 8-9

    matches = index.find_matches(min_length=2)

    assert matches == [Match(end=5, length=2), Match(end=1, length=2)]
    assert index.continuation(5, depth=5) == [4]
    assert index.continuation(1, depth=5) == [3]
    assert index.continuation(len(index) - 1, depth=5) == []


def test_match_stops_at_previous_document():
    index = RequestIndex(key_length=4)
    index.add_document([5, 6])  # positions 0-1, separator at 2
    index.add_document([7, 8])  # positions 3-4, separator at 5
    index.extend([6, 7])  # "6 7" occurs only across the boundary of the two documents

    matches = index.find_matches(min_length=1)

    assert matches == [Match(end=3, length=1)]
    assert index.find_matches(min_length=2) == []


def test_match_stops_at_live_segment_start():
    index = RequestIndex(key_length=4)
    index.add_document([4, 4, 4])
    index.extend([4])

    matches = index.find_matches(min_length=1)

    assert [m.length for m in matches] == [1, 1, 1]
    assert [m.end for m in matches] == [2, 1, 0]


def test_match_longer_than_key_length():
    index = RequestIndex(key_length=2)
    index.add_document([9, 1, 2, 3, 4, 5, 6])
    index.extend([1, 2, 3, 4, 5])

    matches = index.find_matches(min_length=5, max_length=32)

    assert matches == [Match(end=5, length=5)]


def test_empty_document_adds_no_separator():
    index = RequestIndex()
    index.add_document([])
    index.add_document([3])

    assert len(index) == 2
    assert index.token_at(1) < 0


def test_add_document_after_extend_raises():
    index = RequestIndex()
    index.extend([1])

    with pytest.raises(RuntimeError, match="add_document"):
        index.add_document([2])


def test_negative_token_raises():
    index = RequestIndex()

    with pytest.raises(ValueError, match="-3"):
        index.extend([1, -3])


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([1.7, 2.2], "got float 1.7 at position 0"),
        ([1, 2, 3.0], "got float 3.0 at position 2"),
        ([True, 2], "got bool True"),
        (np.array([1.5, 2.5]), "integer dtype, got float64"),
        (torch.tensor([1.0, 2.0]), "integer dtype, got torch.float32"),
        (torch.tensor([True, False]), "integer dtype, got torch.bool"),
        (torch.tensor([[1, 2]]), "one-dimensional, got shape (1, 2)"),
        ("abc", "got str 'abc'"),
    ],
)
def test_document_non_integer_ids_raise(document, fragment):
    index = RequestIndex()

    with pytest.raises(ValueError, match="document token ids must") as error:
        index.add_document(document)

    assert fragment in str(error.value)
    assert len(index) == 0


def test_document_integer_arrays_accepted():
    from_list = RequestIndex()
    from_list.add_document([5, 6, 7])
    documents = (np.array([5, 6, 7]), np.array([5, 6, 7], dtype=np.uint16), torch.tensor([5, 6, 7]))
    for document in documents:
        index = RequestIndex()
        index.add_document(document)

        assert flat_tokens(index) == flat_tokens(from_list)


@pytest.mark.parametrize(("key_length", "max_occurrences"), [(0, 1), (1, 0)])
def test_invalid_options_raise(key_length, max_occurrences):
    with pytest.raises(ValueError, match="must be at least 1, got 0"):
        RequestIndex(key_length=key_length, max_occurrences=max_occurrences)


# -- bounded memory on repetitive text ----------------------------------------------------------

LONG_LENGTH = 200_000
SENTENCE = list(range(100, 112))  # 12 distinct tokens


def repeated(pattern: list[int], length: int) -> list[int]:
    return (pattern * (length // len(pattern) + 1))[:length]


@pytest.mark.parametrize(
    ("pattern", "max_keys"),
    [([7], 4), (SENTENCE, 4 * len(SENTENCE))],
    ids=["one-token", "12-token-sentence"],
)
def test_repetitive_text_bounded(pattern, max_keys):
    max_occurrences = 64
    index = RequestIndex(key_length=4, max_occurrences=max_occurrences)
    tokens = repeated(pattern, LONG_LENGTH)
    for start in range(0, LONG_LENGTH, 10_000):
        index.extend(tokens[start : start + 10_000])

    # The position lists are private. They are the memory and the per-query work that
    # max_occurrences bounds.
    list_sizes = [len(positions) for positions in index._table.values()]

    assert len(index) == LONG_LENGTH
    assert index.num_keys <= max_keys
    assert max(list_sizes) <= 2 * max_occurrences
    assert min(list_sizes) >= max_occurrences


@pytest.mark.parametrize("pattern", [[7], SENTENCE], ids=["one-token", "12-token-sentence"])
@pytest.mark.parametrize("in_document", [False, True], ids=["live", "document"])
def test_repetitive_text_matches(pattern, in_document):
    max_length, limit = 32, 16
    index = RequestIndex(key_length=4, max_occurrences=64)
    tokens = repeated(pattern, LONG_LENGTH)
    if in_document:
        index.add_document(tokens)
        index.extend(pattern * 3)
    else:
        index.extend(tokens)
    flat = flat_tokens(index)
    start = segment_start(index)

    found = index.find_matches(min_length=1, max_length=max_length, limit=limit)

    # The most recent occurrences are the longest matches here, and each key keeps at least
    # max_occurrences >= limit recent positions, so the capped index is still exact. The
    # reference runs over a tail window that is long enough to hold all of them.
    window = 2_000
    tail = flat[-window:]
    expected = brute_force_matches(tail, max(0, start - (len(flat) - window)), 1, max_length)
    offset = len(flat) - window
    expected = [Match(m.end + offset, m.length) for m in expected[:limit]]
    assert found == expected
    assert len(found) == limit
    assert found[0].length == min(max_length, index.live_length)
