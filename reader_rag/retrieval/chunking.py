"""Split documents into overlapping chunks of a fixed number of tokens.

Chunk boundaries come from the tokenizer's character offsets, so every chunk's text is an
exact substring of its document: ``document.text[chunk.start:chunk.end] == chunk.text``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reader_rag.retrieval.documents import Document

__all__ = ["Chunk", "OffsetTokenizer", "chunk_document", "chunk_documents", "token_windows"]


class OffsetTokenizer(Protocol):
    """A Hugging Face tokenizer that returns character offsets (a "fast" tokenizer)."""

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Chunk:
    """A window of one document's tokens, kept as text.

    ``chunk_index`` counts the chunks of one document from 0. ``start`` and ``end`` are the
    chunk's character offsets in the document text. ``metadata`` is the document's metadata.
    """

    text: str
    source: str
    chunk_index: int
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        """Return the chunk as a JSON-serializable dict, the inverse of ``from_json``."""
        return {
            "text": self.text,
            "source": self.source,
            "chunk_index": self.chunk_index,
            "start": self.start,
            "end": self.end,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Chunk:
        """Build a chunk from a dict written by ``to_json``. Raises KeyError on a missing field."""
        return cls(
            text=row["text"],
            source=row["source"],
            chunk_index=row["chunk_index"],
            start=row["start"],
            end=row["end"],
            metadata=row["metadata"],
        )


def chunk_documents(
    documents: Iterable[Document],
    tokenizer: OffsetTokenizer,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Split each document into chunks of at most ``chunk_tokens`` tokens.

    Consecutive chunks of one document share ``overlap_tokens`` tokens. Special tokens such
    as ``[CLS]`` are not counted, so an embedder that adds two of them receives up to
    ``chunk_tokens + 2`` tokens per chunk. Documents that produce no tokens give no chunks.

    Raises:
        ValueError: ``chunk_tokens`` is below 1, ``overlap_tokens`` is negative or not below
            ``chunk_tokens``, or the tokenizer returns no character offsets.
    """
    validate_window(chunk_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for document in documents:
        chunks.extend(chunk_document(document, tokenizer, chunk_tokens, overlap_tokens))
    return chunks


def chunk_document(
    document: Document,
    tokenizer: OffsetTokenizer,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Split one document into chunks. See ``chunk_documents`` for the contract."""
    validate_window(chunk_tokens, overlap_tokens)
    offsets = token_offsets(document.text, tokenizer)
    chunks = []
    for chunk_index, (first, last) in enumerate(
        token_windows(len(offsets), chunk_tokens, overlap_tokens)
    ):
        start = offsets[first][0]
        end = offsets[last - 1][1]
        chunks.append(
            Chunk(
                text=document.text[start:end],
                source=document.source,
                chunk_index=chunk_index,
                start=start,
                end=end,
                metadata=document.metadata,
            )
        )
    return chunks


def token_windows(
    num_tokens: int, chunk_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """Return the ``[first, last)`` token ranges of the chunks of a ``num_tokens``-token text.

    Windows start every ``chunk_tokens - overlap_tokens`` tokens, and the last window ends at
    ``num_tokens``. A text of at most ``chunk_tokens`` tokens gives one window.
    """
    validate_window(chunk_tokens, overlap_tokens)
    stride = chunk_tokens - overlap_tokens
    windows = []
    first = 0
    while first < num_tokens:
        last = min(first + chunk_tokens, num_tokens)
        windows.append((first, last))
        if last == num_tokens:
            break
        first += stride
    return windows


def token_offsets(text: str, tokenizer: OffsetTokenizer) -> Sequence[tuple[int, int]]:
    """Return the ``(start, end)`` character offsets of the tokens of ``text``, no special tokens."""
    try:
        encoding = tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            # Documents are longer than the model's maximum input on purpose, so the
            # tokenizer's warning about sequence length does not apply.
            verbose=False,
        )
    except NotImplementedError as error:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} returns no character offsets ({error}); "
            "load a fast tokenizer, for example AutoTokenizer.from_pretrained(name, use_fast=True)"
        ) from None
    offsets = encoding.get("offset_mapping")
    if offsets is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} returned no offset_mapping; "
            "load a fast tokenizer, for example AutoTokenizer.from_pretrained(name, use_fast=True)"
        )
    return [(int(start), int(end)) for start, end in offsets]


def validate_window(chunk_tokens: int, overlap_tokens: int) -> None:
    """Raise ValueError unless ``0 <= overlap_tokens < chunk_tokens``."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if overlap_tokens < 0 or overlap_tokens >= chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be at least 0 and below chunk_tokens ({chunk_tokens}), "
            f"got {overlap_tokens}"
        )
