"""Tests for reader_rag.index.datastore, checked against brute-force search."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader_rag.index.datastore import (
    CorpusDatastore,
    DatastoreError,
    DatastoreIntegrityError,
    build_suffix_array,
)

# Brute-force references


def brute_suffix_array(tokens: list[int]) -> list[int]:
    """Sort suffix start positions by Python's list order, where a prefix sorts first."""
    return sorted(range(len(tokens)), key=lambda start: tokens[start:])


def brute_occurrences(chunks: list[list[int]], pattern: list[int]) -> list[tuple[int, int]]:
    """Return (chunk number, start offset) of every occurrence of ``pattern`` inside one chunk."""
    found = []
    for chunk_number, chunk in enumerate(chunks):
        for start in range(len(chunk) - len(pattern) + 1):
            if chunk[start : start + len(pattern)] == pattern:
                found.append((chunk_number, start))
    return found


def brute_longest_match(
    chunks: list[list[int]], context: list[int], max_length: int
) -> tuple[int, list[tuple[int, int]]]:
    """Return the longest matching context suffix length and its occurrences."""
    for length in range(min(max_length, len(context)), 0, -1):
        occurrences = brute_occurrences(chunks, context[len(context) - length :])
        if occurrences:
            return length, occurrences
    return 0, []


def brute_continuations(
    chunks: list[list[int]], occurrences: list[tuple[int, int]], length: int, depth: int
) -> Counter[tuple[int, ...]]:
    return Counter(
        tuple(chunks[chunk_number][start + length : start + length + depth])
        for chunk_number, start in occurrences
    )


def chunk_starts(chunks: list[list[int]]) -> list[int]:
    """Return the position of each chunk's first token in the datastore's token array."""
    starts = []
    position = 0
    for chunk in chunks:
        starts.append(position)
        position += len(chunk) + 1
    return starts


# Strategies: small alphabets so that repeats, and long matches, are common.

alphabet_sizes = st.integers(min_value=1, max_value=4)


@st.composite
def corpora(draw) -> tuple[int, list[list[int]]]:
    vocab_size = draw(alphabet_sizes)
    chunks = draw(
        st.lists(
            st.lists(st.integers(0, vocab_size - 1), max_size=25), min_size=0, max_size=6
        )
    )
    return vocab_size, chunks


@st.composite
def corpus_and_context(draw) -> tuple[int, list[list[int]], list[int]]:
    vocab_size, chunks = draw(corpora())
    # Out-of-vocabulary ids (vocab_size and -1) must never match.
    context = draw(st.lists(st.integers(-1, vocab_size), max_size=20))
    if chunks and draw(st.booleans()):
        # Often end the context with a real piece of the corpus, so long matches occur.
        chunk = draw(st.sampled_from(chunks))
        start = draw(st.integers(0, len(chunk)))
        end = draw(st.integers(start, len(chunk)))
        context = context + chunk[start:end]
    return vocab_size, chunks, context


# Suffix array construction


@settings(max_examples=300, deadline=None)
@given(corpora())
def test_suffix_array_matches_brute_force(corpus) -> None:
    vocab_size, chunks = corpus

    datastore = CorpusDatastore.build(chunks, vocab_size)

    tokens = datastore.tokens.astype(np.int64).tolist()
    assert datastore.suffix_array.tolist() == brute_suffix_array(tokens)
    datastore.check_integrity()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2), max_size=60))
def test_build_suffix_array_raw_tokens(tokens) -> None:
    result = build_suffix_array(np.asarray(tokens, dtype=np.uint16))

    assert result.tolist() == brute_suffix_array(tokens)


def test_suffix_array_of_long_run() -> None:
    tokens = [5] * 1000 + [3] * 1000

    result = build_suffix_array(np.asarray(tokens, dtype=np.uint16))

    assert result.tolist() == brute_suffix_array(tokens)


def test_layout_puts_boundary_after_each_chunk() -> None:
    datastore = CorpusDatastore.build([[1, 2], [], [3]], vocab_size=10)

    boundary = np.iinfo(np.uint16).max
    assert datastore.tokens.tolist() == [1, 2, boundary, boundary, 3, boundary]
    assert datastore.num_chunks == 3
    assert datastore.num_tokens == 6


def test_token_dtype_follows_vocab_size() -> None:
    small = CorpusDatastore.build([[65_534]], vocab_size=65_535)
    large = CorpusDatastore.build([[65_535, 70_000]], vocab_size=70_001)

    assert small.tokens.dtype == np.uint16
    assert small.boundary == 65_535
    assert large.tokens.dtype == np.uint32
    assert large.boundary == 4_294_967_295
    assert large.longest_match([65_535, 70_000]) == (2, 0, 1)


def test_build_three_million_tokens_under_a_minute() -> None:
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 30_000, 1_000_000)
    # Every chunk appears three times, so repeats are long, as with duplicated passages.
    chunks = [corpus[start : start + 500] for start in range(0, corpus.size, 500)] * 3

    started = time.perf_counter()
    datastore = CorpusDatastore.build(chunks, vocab_size=30_522)
    elapsed = time.perf_counter() - started

    assert datastore.num_tokens == 3_006_000
    assert elapsed < 60
    datastore.check_integrity()


# Queries against brute force


@settings(max_examples=400, deadline=None)
@given(corpus_and_context(), st.integers(0, 8))
def test_longest_match_matches_brute_force(case, max_length) -> None:
    vocab_size, chunks, context = case
    datastore = CorpusDatastore.build(chunks, vocab_size)

    length, lo, hi = datastore.longest_match(context, max_length)

    expected_length, expected_occurrences = brute_longest_match(chunks, context, max_length)
    assert length == expected_length
    if length == 0:
        assert (lo, hi) == (0, 0)
        return
    starts = chunk_starts(chunks)
    expected_positions = sorted(starts[number] + offset for number, offset in expected_occurrences)
    assert sorted(datastore.suffix_array[lo:hi].tolist()) == expected_positions


@settings(max_examples=400, deadline=None)
@given(corpus_and_context(), st.integers(0, 6))
def test_continuations_match_brute_force(case, depth) -> None:
    vocab_size, chunks, context = case
    datastore = CorpusDatastore.build(chunks, vocab_size)
    length, lo, hi = datastore.longest_match(context, max_length=6)

    continuations = datastore.continuations(lo, hi, length, depth, max_occurrences=1000)

    _, occurrences = brute_longest_match(chunks, context, 6)
    assert Counter(continuations) == brute_continuations(chunks, occurrences, length, depth)


@settings(max_examples=200, deadline=None)
@given(corpus_and_context(), st.integers(1, 4))
def test_continuations_sample_at_most_max(case, max_occurrences) -> None:
    vocab_size, chunks, context = case
    datastore = CorpusDatastore.build(chunks, vocab_size)
    length, lo, hi = datastore.longest_match(context, max_length=3)

    continuations = datastore.continuations(lo, hi, length, 4, max_occurrences=max_occurrences)

    assert len(continuations) == min(hi - lo, max_occurrences)
    _, occurrences = brute_longest_match(chunks, context, 3)
    allowed = brute_continuations(chunks, occurrences, length, 4)
    assert all(continuation in allowed for continuation in continuations)


def test_continuations_sample_evenly_in_sorted_order() -> None:
    # Token 0 followed by 1 ten times, then by 2 ten times: an even sample of 2 includes both.
    chunks = [[0, 1]] * 10 + [[0, 2]] * 10
    datastore = CorpusDatastore.build(chunks, vocab_size=3)
    length, lo, hi = datastore.longest_match([0])

    assert (length, hi - lo) == (1, 20)
    assert datastore.continuations(lo, hi, length, depth=1, max_occurrences=2) == [(1,), (2,)]


def test_continuation_stops_at_chunk_boundary() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3], [4, 5]], vocab_size=6)
    length, lo, hi = datastore.longest_match([9, 2])

    assert length == 1
    assert datastore.continuations(lo, hi, length, depth=5) == [(3,)]


def test_match_does_not_cross_chunks() -> None:
    datastore = CorpusDatastore.build([[1, 2], [3, 4]], vocab_size=5)

    assert datastore.longest_match([2, 3])[0] == 1


def test_max_length_limits_match() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3, 4, 5]], vocab_size=6)

    assert datastore.longest_match([1, 2, 3, 4, 5], max_length=3)[0] == 3
    assert datastore.longest_match([1, 2, 3, 4, 5], max_length=0) == (0, 0, 0)


def test_empty_datastore_matches_nothing() -> None:
    for chunks in ([], [[]]):
        datastore = CorpusDatastore.build(chunks, vocab_size=4)
        datastore.check_integrity()
        assert datastore.longest_match([1, 2]) == (0, 0, 0)
        assert datastore.continuations(0, 0, 0, depth=3) == []


def test_boundary_value_in_context_never_matches() -> None:
    # With vocab_size 65,535 the boundary 65,535 is one past the last id, so a context may
    # contain it. It must not match the boundary between chunks [1] and [2].
    datastore = CorpusDatastore.build([[1], [2]], vocab_size=65_535)

    assert datastore.longest_match([1, 65_535, 2])[0] == 1


def test_numpy_context_is_accepted() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3]], vocab_size=4)

    assert datastore.longest_match(np.array([7, 1, 2], dtype=np.int64)[1:])[0] == 2


def test_real_text_match_and_continuation(rag_prompts, minilm_tokenizer) -> None:
    passages = [passage for prompt in rag_prompts[:20] for passage in prompt.passages]
    token_lists = minilm_tokenizer(passages, add_special_tokens=False)["input_ids"]
    datastore = CorpusDatastore.build(token_lists, vocab_size=len(minilm_tokenizer))
    datastore.check_integrity()
    passage_ids = token_lists[17]

    length, lo, hi = datastore.longest_match(passage_ids[:40], max_length=32)

    assert length == 32
    assert hi > lo
    assert tuple(passage_ids[40:48]) in datastore.continuations(lo, hi, length, depth=8)


# Argument errors


def test_id_outside_vocabulary_raises() -> None:
    with pytest.raises(ValueError, match=r"chunk 1 contains token id 9, outside \[0, 5\)"):
        CorpusDatastore.build([[1], [9]], vocab_size=5)


def test_negative_id_raises() -> None:
    with pytest.raises(ValueError, match="token id -1"):
        CorpusDatastore.build([[-1]], vocab_size=5)


@pytest.mark.parametrize("vocab_size", [0, 2**32])
def test_vocab_size_out_of_range_raises(vocab_size: int) -> None:
    with pytest.raises(ValueError, match=f"got {vocab_size}"):
        CorpusDatastore.build([[0]], vocab_size=vocab_size)


def test_invalid_continuation_range_raises() -> None:
    datastore = CorpusDatastore.build([[1, 2]], vocab_size=3)

    with pytest.raises(ValueError, match=r"range \[2, 1\) is invalid"):
        datastore.continuations(2, 1, 1, depth=2)
    with pytest.raises(ValueError, match="max_occurrences must be at least 1, got 0"):
        datastore.continuations(0, 1, 1, depth=2, max_occurrences=0)


# Saving, loading and integrity


def build_saved(tmp_path: Path) -> tuple[CorpusDatastore, Path]:
    path = tmp_path / "datastore"
    datastore = CorpusDatastore.build(
        [[1, 2, 3, 1, 2], [2, 3, 1]], vocab_size=4, path=path, tokenizer_id="toy"
    )
    return datastore, path


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    built, path = build_saved(tmp_path)

    loaded = CorpusDatastore.load(path)

    assert isinstance(loaded.tokens, np.memmap)
    assert isinstance(loaded.suffix_array, np.memmap)
    assert loaded.tokenizer_id == "toy"
    assert loaded.vocab_size == 4
    assert loaded.tokens.tolist() == built.tokens.tolist()
    assert loaded.suffix_array.tolist() == built.suffix_array.tolist()
    assert loaded.longest_match([0, 2, 3]) == built.longest_match([0, 2, 3])
    loaded.check_integrity()


def test_load_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent"):
        CorpusDatastore.load(tmp_path / "absent")


def test_load_missing_file_raises(tmp_path: Path) -> None:
    _, path = build_saved(tmp_path)
    (path / "suffix_array.npy").unlink()

    with pytest.raises(DatastoreError, match=r"suffix_array\.npy' is missing"):
        CorpusDatastore.load(path)


def test_load_truncated_file_raises(tmp_path: Path) -> None:
    _, path = build_saved(tmp_path)
    data = (path / "tokens.npy").read_bytes()
    (path / "tokens.npy").write_bytes(data[: len(data) - 4])

    with pytest.raises(DatastoreError, match=r"tokens\.npy"):
        CorpusDatastore.load(path)


def test_load_newer_format_version_raises(tmp_path: Path) -> None:
    _, path = build_saved(tmp_path)
    info = json.loads((path / "datastore.json").read_text())
    info["format_version"] = 99
    (path / "datastore.json").write_text(json.dumps(info))

    with pytest.raises(DatastoreError, match="format version 99.*upgrade reader_rag"):
        CorpusDatastore.load(path)


def test_load_length_mismatch_raises(tmp_path: Path) -> None:
    _, path = build_saved(tmp_path)
    np.save(path / "suffix_array.npy", np.arange(3, dtype=np.int32))

    with pytest.raises(DatastoreError, match="has 3 entries but tokens.npy has 10 tokens"):
        CorpusDatastore.load(path)


def test_integrity_detects_unsorted_suffix_array() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3], [2, 1]], vocab_size=4)
    swapped = datastore.suffix_array.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    broken = CorpusDatastore(datastore.tokens, swapped, 4)

    with pytest.raises(DatastoreIntegrityError, match="not sorted at ranks 1 and 2"):
        broken.check_integrity()


def test_integrity_detects_non_permutation() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3]], vocab_size=4)
    repeated = datastore.suffix_array.copy()
    repeated[0] = repeated[1]
    broken = CorpusDatastore(datastore.tokens, repeated, 4)

    with pytest.raises(DatastoreIntegrityError, match="not a permutation"):
        broken.check_integrity()


def test_integrity_detects_id_outside_vocabulary() -> None:
    datastore = CorpusDatastore.build([[1, 2, 3]], vocab_size=4)
    broken = CorpusDatastore(datastore.tokens, datastore.suffix_array, vocab_size=3)

    with pytest.raises(DatastoreIntegrityError, match="token id 3 at position 2"):
        broken.check_integrity()
