"""Suffix array over the token ids of a whole document store, for drafting from the corpus.

Layout: ``tokens`` is the token ids of every chunk, concatenated, with a boundary value after
each chunk. The boundary is the largest value of the token dtype (65,535 for uint16 and
4,294,967,295 for uint32). Token ids are below ``vocab_size``, which is at most the boundary,
so no id equals the boundary and no match or continuation crosses two chunks.
``suffix_array[r]`` is the start position of the ``r``-th smallest suffix of ``tokens``, in
lexicographic order of token values, where a suffix that is a proper prefix of another sorts
first. Only numpy is needed, so the drafter can use a datastore without torch.

On disk a datastore is a folder with ``tokens.npy``, ``suffix_array.npy`` and
``datastore.json``. ``load`` memory-maps both arrays.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reader_rag.atomic_dir import atomic_directory

__all__ = [
    "FORMAT_VERSION",
    "CorpusDatastore",
    "DatastoreError",
    "DatastoreIntegrityError",
    "build_suffix_array",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TOKENS_FILE = "tokens.npy"
SUFFIX_ARRAY_FILE = "suffix_array.npy"
INFO_FILE = "datastore.json"
UINT16_MAX_VOCAB = int(np.iinfo(np.uint16).max)
UINT32_MAX_VOCAB = int(np.iinfo(np.uint32).max)


class DatastoreError(ValueError):
    """A datastore folder that is missing files, corrupt, or from a newer format version."""


class DatastoreIntegrityError(DatastoreError):
    """A datastore whose arrays break an invariant, such as an unsorted suffix array."""


class CorpusDatastore:
    """Token ids of all chunks of a store and their suffix array.

    Use ``build`` or ``load`` to create one. ``path`` is the datastore folder, or None for a
    datastore that exists only in memory.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        suffix_array: np.ndarray,
        vocab_size: int,
        tokenizer_id: str | None = None,
        path: Path | None = None,
    ) -> None:
        self.tokens = tokens
        self.suffix_array = suffix_array
        self.vocab_size = vocab_size
        self.tokenizer_id = tokenizer_id
        self.path = path
        # Plain ndarray views: slicing an np.memmap costs more than slicing an ndarray.
        self._tokens = tokens.view(np.ndarray)
        self._suffix_array = suffix_array.view(np.ndarray)

    def __repr__(self) -> str:
        return (
            f"CorpusDatastore(num_tokens={self.num_tokens}, num_chunks={self.num_chunks}, "
            f"vocab_size={self.vocab_size}, tokenizer_id={self.tokenizer_id!r}, path={self.path})"
        )

    @property
    def boundary(self) -> int:
        """Value that follows every chunk in ``tokens``."""
        return int(np.iinfo(self.tokens.dtype).max)

    @property
    def num_tokens(self) -> int:
        """Length of ``tokens``, boundaries included."""
        return int(self.tokens.shape[0])

    @property
    def num_chunks(self) -> int:
        """Number of chunks, counted as boundary values in ``tokens``."""
        return int(np.count_nonzero(self._tokens == self.boundary))

    # Building, saving and loading

    @classmethod
    def build(
        cls,
        token_id_lists: Iterable[Sequence[int]],
        vocab_size: int,
        path: str | os.PathLike[str] | None = None,
        tokenizer_id: str | None = None,
    ) -> CorpusDatastore:
        """Build a datastore from the token ids of each chunk, and save it when ``path`` is given.

        ``token_id_lists`` contains one sequence of ids per chunk, each id in ``[0, vocab_size)``.
        Token ids are stored as uint16 when ``vocab_size`` is at most 65,535, else as uint32.
        Building takes O(n log^2 n) time for n tokens and, as an estimate, about 60 bytes of
        memory per token.
        Saving replaces ``path`` atomically.

        Raises:
            ValueError: ``vocab_size`` is outside ``[1, 4_294_967_295]``, or an id is outside
                ``[0, vocab_size)``. The message names the chunk and the id.
        """
        tokens = concatenate_chunks(token_id_lists, vocab_size)
        logger.info("building suffix array over %d tokens", tokens.shape[0])
        suffix_array = build_suffix_array(tokens)
        datastore = cls(tokens, suffix_array, vocab_size, tokenizer_id)
        if path is not None:
            datastore.save(path)
        return datastore

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the datastore folder at ``path``, replacing any previous one atomically."""
        path = Path(path)
        with atomic_directory(path) as staging:
            save_array(staging / TOKENS_FILE, self._tokens)
            save_array(staging / SUFFIX_ARRAY_FILE, self._suffix_array)
            info = {
                "format_version": FORMAT_VERSION,
                "tokenizer": self.tokenizer_id,
                "vocab_size": self.vocab_size,
                "token_dtype": str(self.tokens.dtype),
                "boundary": self.boundary,
                "num_tokens": self.num_tokens,
            }
            (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CorpusDatastore:
        """Load a datastore folder, memory-mapping its arrays read-only.

        Checks file presence, format version, dtypes and shapes. Call ``check_integrity`` to
        also verify the sort order, which reads both arrays in full.

        Raises:
            FileNotFoundError: ``path`` is not a folder.
            DatastoreError: a file is missing or corrupt, or the format version is newer than
                this code reads. The message names the file.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"datastore folder {str(path)!r} not found; build it with CorpusDatastore.build"
            )
        info = read_info(path / INFO_FILE)
        tokens = load_array(path / TOKENS_FILE)
        suffix_array = load_array(path / SUFFIX_ARRAY_FILE)
        validate_loaded_arrays(path, info, tokens, suffix_array)
        return cls(tokens, suffix_array, int(info["vocab_size"]), info.get("tokenizer"), path)

    # Queries

    def longest_match(self, context: Sequence[int], max_length: int = 32) -> tuple[int, int, int]:
        """Find the longest suffix of ``context`` that occurs in the corpus.

        Only the last ``max_length`` tokens of ``context`` are used. Ids outside
        ``[0, vocab_size)`` never match. Returns ``(match_length, lo, hi)``, where
        ``suffix_array[lo:hi]`` are the start positions of the occurrences of the last
        ``match_length`` context tokens. ``(0, 0, 0)`` means that not even the last token
        occurs, or that ``context`` or ``max_length`` is empty or 0.

        Runs a binary search over the match length, and each probe is two binary searches over
        the suffix array: O(log(max_length) * max_length * log n) token comparisons for n
        corpus tokens.
        """
        if max_length < 0:
            raise ValueError(f"max_length must be at least 0, got {max_length}")
        pattern = self.matchable_tail(context, max_length)

        best = (0, 0, 0)
        shortest_missing = pattern.shape[0] + 1
        longest_found = 0
        while longest_found + 1 < shortest_missing:
            length = (longest_found + shortest_missing) // 2
            lo, hi = self.suffix_range(pattern[pattern.shape[0] - length :])
            if hi > lo:
                longest_found = length
                best = (length, lo, hi)
            else:
                shortest_missing = length
        return best

    def continuations(
        self, lo: int, hi: int, match_length: int, depth: int, max_occurrences: int = 64
    ) -> list[tuple[int, ...]]:
        """Return the up to ``depth`` tokens that follow occurrences in ``suffix_array[lo:hi]``.

        Each occurrence starts ``match_length`` tokens before its continuation. A continuation
        stops before a chunk boundary, so it may be shorter than ``depth`` or empty. When the
        range has more than ``max_occurrences`` entries, ``max_occurrences`` of them are
        sampled evenly across it. The range is sorted by what follows the match, so even
        sampling keeps continuations of every large group. The result has one tuple per
        sampled occurrence, in suffix array order, so equal continuations are adjacent.
        Takes O(min(hi - lo, max_occurrences) * depth) time.
        """
        self.validate_range(lo, hi, match_length, depth, max_occurrences)
        count = hi - lo
        if count == 0:
            return []
        if depth == 0:
            return [()] * min(count, max_occurrences)
        if count > max_occurrences:
            ranks = np.linspace(lo, hi - 1, max_occurrences).round().astype(np.int64)
        else:
            ranks = np.arange(lo, hi, dtype=np.int64)

        starts = self._suffix_array[ranks].astype(np.int64) + match_length
        positions = starts[:, None] + np.arange(depth, dtype=np.int64)[None, :]
        inside = positions < self.num_tokens
        values = self._tokens[np.minimum(positions, max(self.num_tokens - 1, 0))]
        stops = ~inside | (values == self.boundary)
        lengths = np.where(stops.any(axis=1), stops.argmax(axis=1), depth)
        return [tuple(row[:length].tolist()) for row, length in zip(values, lengths)]

    def matchable_tail(self, context: Sequence[int], max_length: int) -> np.ndarray:
        """Return the last ``max_length`` context ids after the last id outside the vocabulary."""
        start = max(len(context) - max_length, 0)
        tail = np.asarray(context[start:], dtype=np.int64).reshape(-1)
        invalid = np.flatnonzero((tail < 0) | (tail >= self.vocab_size))
        if invalid.size:
            tail = tail[invalid[-1] + 1 :]
        return tail

    def suffix_range(self, pattern: np.ndarray) -> tuple[int, int]:
        """Return the suffix array range ``[lo, hi)`` of the suffixes that start with ``pattern``.

        Two binary searches: O(len(pattern) * log n) token comparisons.
        """
        lo = self.bisect(pattern, upper=False)
        hi = self.bisect(pattern, upper=True, start=lo)
        return lo, hi

    def bisect(self, pattern: np.ndarray, upper: bool, start: int = 0) -> int:
        """Return the first rank whose suffix is >= ``pattern`` (or > it, when ``upper``).

        A suffix is compared by its first ``len(pattern)`` tokens, so with ``upper`` the
        suffixes that start with ``pattern`` count as equal and are skipped.
        """
        lo, hi = start, self.num_tokens
        while lo < hi:
            middle = (lo + hi) // 2
            order = self.compare_prefix(int(self._suffix_array[middle]), pattern)
            if order < 0 or (upper and order == 0):
                lo = middle + 1
            else:
                hi = middle
        return lo

    def compare_prefix(self, position: int, pattern: np.ndarray) -> int:
        """Compare the suffix at ``position``, cut to ``len(pattern)`` tokens, with ``pattern``.

        Returns -1, 0 or 1. A suffix that is a proper prefix of ``pattern`` compares as
        smaller, as in the suffix array order.
        """
        length = pattern.shape[0]
        segment = self._tokens[position : position + length]
        differences = np.flatnonzero(segment != pattern[: segment.shape[0]])
        if differences.size:
            first = differences[0]
            return -1 if segment[first] < pattern[first] else 1
        if segment.shape[0] < length:
            return -1
        return 0

    def validate_range(
        self, lo: int, hi: int, match_length: int, depth: int, max_occurrences: int
    ) -> None:
        """Raise ValueError when the arguments of ``continuations`` are out of range."""
        if not 0 <= lo <= hi <= self.num_tokens:
            raise ValueError(
                f"suffix array range [{lo}, {hi}) is invalid for {self.num_tokens} tokens; "
                "pass the lo and hi returned by longest_match"
            )
        if match_length < 0:
            raise ValueError(f"match_length must be at least 0, got {match_length}")
        if depth < 0:
            raise ValueError(f"depth must be at least 0, got {depth}")
        if max_occurrences < 1:
            raise ValueError(f"max_occurrences must be at least 1, got {max_occurrences}")

    # Integrity

    def check_integrity(self) -> None:
        """Verify the datastore's invariants, reading both arrays in full.

        Checks that token ids are below ``vocab_size`` or equal to the boundary, that the last
        token is a boundary, that ``suffix_array`` is a permutation of ``range(n)``, and that it
        is sorted. Sortedness uses the linear-time test: with ``rank`` the inverse permutation
        and ``rank[n] = -1``, each adjacent pair ``a, b`` must have
        ``(tokens[a], rank[a + 1]) < (tokens[b], rank[b + 1])``. Takes O(n) time.

        Raises:
            DatastoreIntegrityError: an invariant fails. The message names the position.
        """
        tokens = self._tokens
        suffix_array = self._suffix_array.astype(np.int64)
        n = tokens.shape[0]
        where = f"datastore {str(self.path)!r}" if self.path else "in-memory datastore"
        fix = "rebuild it with CorpusDatastore.build"

        bad_ids = np.flatnonzero((tokens >= self.vocab_size) & (tokens != self.boundary))
        if bad_ids.size:
            position = int(bad_ids[0])
            raise DatastoreIntegrityError(
                f"{where}: token id {int(tokens[position])} at position {position} is not below "
                f"vocab_size {self.vocab_size}; {fix}"
            )
        if n and int(tokens[-1]) != self.boundary:
            raise DatastoreIntegrityError(
                f"{where}: the last token is {int(tokens[-1])}, not the boundary "
                f"{self.boundary}; {fix}"
            )
        if suffix_array.shape != (n,):
            raise DatastoreIntegrityError(
                f"{where}: suffix array has shape {suffix_array.shape}, expected ({n},); {fix}"
            )
        if n == 0:
            return

        rank = inverse_permutation(suffix_array, where, fix)
        next_rank = np.append(rank, -1)
        first = suffix_array[:-1]
        second = suffix_array[1:]
        first_token = tokens[first].astype(np.int64)
        second_token = tokens[second].astype(np.int64)
        ordered = (first_token < second_token) | (
            (first_token == second_token) & (next_rank[first + 1] < next_rank[second + 1])
        )
        unordered = np.flatnonzero(~ordered)
        if unordered.size:
            index = int(unordered[0])
            raise DatastoreIntegrityError(
                f"{where}: suffix array is not sorted at ranks {index} and {index + 1} "
                f"(positions {int(first[index])} and {int(second[index])}); {fix}"
            )


def concatenate_chunks(token_id_lists: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """Concatenate the chunks' ids, a boundary after each, in the smallest dtype that fits."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    if not 1 <= vocab_size <= UINT32_MAX_VOCAB:
        raise ValueError(
            f"vocab_size must be between 1 and {UINT32_MAX_VOCAB} so that one value stays "
            f"free for the chunk boundary, got {vocab_size}"
        )
    dtype = np.uint16 if vocab_size <= UINT16_MAX_VOCAB else np.uint32
    boundary = np.array([np.iinfo(dtype).max], dtype=dtype)

    pieces: list[np.ndarray] = []
    for chunk_number, ids in enumerate(token_id_lists):
        array = np.asarray(ids, dtype=np.int64).reshape(-1)
        if array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"chunk {chunk_number} contains token id {bad}, outside [0, {vocab_size}); "
                    "pass the vocab_size of the tokenizer that produced the ids (len(tokenizer))"
                )
        pieces.append(array.astype(dtype))
        pieces.append(boundary)
    if not pieces:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(pieces)


def build_suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Return the suffix array of ``tokens`` as int32 (int64 when n >= 2**31).

    Prefix doubling: after round j, ``rank[i]`` is the dense rank of the first 2**j tokens of
    suffix i, and each round sorts the pairs ``(rank[i], rank[i + 2**j])``. The loop stops when
    all ranks differ, after about log2 of the longest repeated substring rounds, so the total
    is O(n log n log L) for n tokens and longest repeat L.
    """
    n = int(tokens.shape[0])
    index_dtype = np.int32 if n < 2**31 else np.int64
    if n == 0:
        return np.zeros(0, dtype=index_dtype)

    _, rank = np.unique(tokens, return_inverse=True)
    rank = rank.astype(np.int64).reshape(-1)
    order = np.argsort(rank, kind="stable")
    num_ranks = int(rank.max()) + 1
    step = 1
    while num_ranks < n:
        # Second key: rank of the suffix ``step`` tokens later, shifted by one so that 0 means
        # "past the end", which sorts before every real suffix. The combined key is below
        # n * (n + 1), which fits int64 for n up to about 3 * 10**9.
        second = np.zeros(n, dtype=np.int64)
        second[: n - step] = rank[step:] + 1
        key = rank * (n + 1) + second
        order = np.argsort(key)
        sorted_key = key[order]
        new_rank = np.empty(n, dtype=np.int64)
        new_rank[order] = np.concatenate(([0], np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        rank = new_rank
        num_ranks = int(rank[order[-1]]) + 1
        step *= 2
    return order.astype(index_dtype)


def inverse_permutation(suffix_array: np.ndarray, where: str, fix: str) -> np.ndarray:
    """Return ``rank`` with ``rank[suffix_array[r]] = r``, or raise if it is not a permutation."""
    n = suffix_array.shape[0]
    out_of_range = np.flatnonzero((suffix_array < 0) | (suffix_array >= n))
    if out_of_range.size:
        index = int(out_of_range[0])
        raise DatastoreIntegrityError(
            f"{where}: suffix array entry {index} is {int(suffix_array[index])}, outside "
            f"[0, {n}); {fix}"
        )
    counts = np.bincount(suffix_array, minlength=n)
    repeated = np.flatnonzero(counts != 1)
    if repeated.size:
        raise DatastoreIntegrityError(
            f"{where}: suffix array is not a permutation (position {int(repeated[0])} appears "
            f"{int(counts[repeated[0]])} times); {fix}"
        )
    rank = np.empty(n, dtype=np.int64)
    rank[suffix_array] = np.arange(n, dtype=np.int64)
    return rank


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a .npy file and fsync it."""
    with open(path, "wb") as file:
        np.save(file, np.ascontiguousarray(array), allow_pickle=False)
        file.flush()
        os.fsync(file.fileno())


def load_array(path: Path) -> np.ndarray:
    """Memory-map a .npy file read-only, raising DatastoreError when it is missing or corrupt."""
    if not path.is_file():
        raise DatastoreError(
            f"datastore file {str(path)!r} is missing; rebuild the datastore"
        )
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DatastoreError(
            f"datastore file {str(path)!r} is corrupt or truncated ({error}); rebuild the datastore"
        ) from None


def read_info(path: Path) -> dict[str, Any]:
    """Read and check ``datastore.json``."""
    if not path.is_file():
        raise DatastoreError(f"datastore file {str(path)!r} is missing; rebuild the datastore")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise DatastoreError(
            f"datastore file {str(path)!r} is not valid JSON ({error}); rebuild the datastore"
        ) from None
    if not isinstance(info, dict):
        raise DatastoreError(f"datastore file {str(path)!r} is not a JSON object; rebuild the datastore")
    version = info.get("format_version")
    if not isinstance(version, int):
        raise DatastoreError(
            f"datastore file {str(path)!r} has no integer format_version; rebuild the datastore"
        )
    if version > FORMAT_VERSION:
        raise DatastoreError(
            f"datastore {str(path.parent)!r} has format version {version}, but this reader_rag "
            f"reads up to version {FORMAT_VERSION}; upgrade reader_rag or rebuild the datastore"
        )
    if not isinstance(info.get("vocab_size"), int):
        raise DatastoreError(
            f"datastore file {str(path)!r} has no integer vocab_size; rebuild the datastore"
        )
    return info


def validate_loaded_arrays(
    path: Path, info: dict[str, Any], tokens: np.ndarray, suffix_array: np.ndarray
) -> None:
    """Check the dtypes and shapes of loaded arrays against each other and ``info``."""
    vocab_size = info["vocab_size"]
    expected_dtype = np.uint16 if vocab_size <= UINT16_MAX_VOCAB else np.uint32
    problems = []
    if tokens.ndim != 1 or tokens.dtype != expected_dtype:
        problems.append(
            f"{TOKENS_FILE} has dtype {tokens.dtype} and shape {tokens.shape}, expected a 1-D "
            f"{np.dtype(expected_dtype)} array for vocab_size {vocab_size}"
        )
    if suffix_array.ndim != 1 or suffix_array.dtype not in (np.int32, np.int64):
        problems.append(
            f"{SUFFIX_ARRAY_FILE} has dtype {suffix_array.dtype} and shape {suffix_array.shape}, "
            "expected a 1-D int32 or int64 array"
        )
    elif suffix_array.shape != tokens.shape[:1]:
        problems.append(
            f"{SUFFIX_ARRAY_FILE} has {suffix_array.shape[0]} entries but {TOKENS_FILE} has "
            f"{tokens.shape[0]} tokens"
        )
    if info.get("num_tokens") != tokens.shape[0]:
        problems.append(
            f"{INFO_FILE} says num_tokens is {info.get('num_tokens')} but {TOKENS_FILE} has "
            f"{tokens.shape[0]} tokens"
        )
    if problems:
        raise DatastoreError(
            f"datastore {str(path)!r} is inconsistent: {'; '.join(problems)}; rebuild the datastore"
        )
