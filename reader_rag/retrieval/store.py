"""A document store on disk: chunk embeddings in FAISS, chunk texts, and a corpus datastore.

A store is a folder with:

- ``index.faiss``: the FAISS index. Vector ``i`` is the embedding of chunk ``i``.
- ``chunks.jsonl``: one chunk per line, in index order (see ``Chunk.to_json``).
- ``manifest.json``: settings, versions and the size and SHA-256 of every other file.
- ``datastore/`` (optional): the corpus datastore, a suffix array over the chunks' token ids
  from the drafting tokenizer (see ``reader_rag.index.datastore``).

``build`` and ``add`` write a complete new folder next to the store and swap it in with a
rename, so a process killed mid-write leaves the previous store loadable.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from reader_rag.atomic_dir import atomic_directory, previous_versions
from reader_rag.index import datastore as datastore_files
from reader_rag.index.datastore import CorpusDatastore, DatastoreError
from reader_rag.retrieval.chunking import Chunk, chunk_documents, validate_window
from reader_rag.retrieval.documents import Document
from reader_rag.retrieval.embeddings import (
    Embedder,
    load_embedder,
    resolve_embedder_name,
    tokenizer_id,
)
from reader_rag.retrieval.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    CorruptStoreError,
    EmbedderMismatchError,
    StoreVersionError,
    describe_files,
    read_manifest,
    reader_rag_version,
    verify_files,
)
from reader_rag.retrieval.vector_index import (
    INDEX_TYPES,
    apply_search_params,
    create_index,
    index_params,
    to_search_device,
)

__all__ = [
    "CHUNKS_FILE",
    "DATASTORE_DIR",
    "INDEX_FILE",
    "CorruptStoreError",
    "DocumentStore",
    "EmbedderMismatchError",
    "SearchResult",
    "StoreVersionError",
]

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
CHUNKS_FILE = "chunks.jsonl"
DATASTORE_DIR = "datastore"
# Upper limit of the default chunk length in tokens, for embedders with longer inputs.
MAX_DEFAULT_CHUNK_TOKENS = 256
# Number of chunk texts passed to the drafting tokenizer per call.
TOKENIZE_BATCH = 1024

EmbedderSpec = Embedder | str | os.PathLike[str] | None


@dataclass(frozen=True)
class SearchResult:
    """A retrieved chunk and its inner-product score (cosine similarity when normalized)."""

    chunk: Chunk
    score: float


class DocumentStore:
    """A loaded document store. Create one with ``build`` or ``load``.

    The embedder is loaded on first use (``search`` or ``add``) unless one was passed in.

    Attributes:
        path: The store folder.
        manifest: The parsed ``manifest.json``.
        chunks: All chunks, in index order.
        datastore: The corpus datastore, memory-mapped, or None when the store has none.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        index: faiss.Index,
        chunks: list[Chunk],
        datastore: CorpusDatastore | None,
        embedder: Embedder | None = None,
        datastore_tokenizer: Any = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.chunks = chunks
        self.datastore = datastore
        self._index = index
        self._search_index = to_search_device(index, manifest["index_type"])
        self._embedder = embedder
        self._datastore_tokenizer = datastore_tokenizer

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        return (
            f"DocumentStore(path={str(self.path)!r}, chunks={len(self)}, "
            f"embedder={self.manifest['embedder']!r}, index_type={self.manifest['index_type']!r}, "
            f"datastore={self.datastore is not None})"
        )

    @property
    def embedder(self) -> Embedder:
        """The store's embedder, loaded on first access from the manifest's name."""
        if self._embedder is None:
            embedder = load_embedder(self.manifest["embedder"])
            check_dimension(self.path, self._index, embedder)
            self._embedder = embedder
        return self._embedder

    # Building and loading

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        out_dir: str | os.PathLike[str],
        embedder: EmbedderSpec = None,
        *,
        chunk_tokens: int | None = None,
        overlap_tokens: int = 32,
        index_type: str = "flat",
        normalize: bool = True,
        batch_size: int = 64,
        show_progress: bool = True,
        datastore_tokenizer: Any = None,
    ) -> DocumentStore:
        """Chunk, embed and index ``documents`` into a new store at ``out_dir``.

        ``embedder`` is an ``Embedder``, a sentence-transformers name or path, or None for
        the default (see ``load_embedder``). Chunks use the embedder's tokenizer.
        ``chunk_tokens`` defaults to the embedder's maximum input length minus its special
        tokens, capped at 256 (254 for all-MiniLM-L6-v2), so no chunk is truncated. When
        ``datastore_tokenizer`` (a Hugging Face tokenizer) is given, the store also gets a
        corpus datastore of the chunks' token ids under that tokenizer. An existing store at
        ``out_dir`` is replaced atomically.

        Raises:
            ValueError: a setting is invalid, ``index_type='ivf'`` gets too few chunks, a
                document's metadata is not JSON-serializable, or ``out_dir`` is a non-empty
                folder that is not a store.
        """
        out_dir = Path(out_dir)
        validate_build_settings(chunk_tokens, overlap_tokens, index_type, batch_size)
        check_replaceable(out_dir)
        started = time.perf_counter()

        embedder = resolve_embedder(embedder)
        if chunk_tokens is None:
            chunk_tokens = default_chunk_tokens(embedder)
            validate_window(chunk_tokens, overlap_tokens)
        warn_if_truncated(embedder, chunk_tokens)
        documents = list(documents)
        chunks = chunk_documents(documents, embedder.tokenizer, chunk_tokens, overlap_tokens)
        check_metadata_serializable(chunks)
        params = index_params(index_type, len(chunks))

        vectors = embed_chunks(embedder, chunks, normalize, batch_size, show_progress)
        index = create_index(vectors, index_type, params)
        datastore = None
        if datastore_tokenizer is not None:
            datastore = build_datastore(chunks, datastore_tokenizer, show_progress)

        manifest = {
            "format_version": FORMAT_VERSION,
            "reader_rag_version": reader_rag_version(),
            "embedder": embedder.name,
            "dimension": embedder.dimension,
            "normalize": normalize,
            "chunk_tokens": chunk_tokens,
            "overlap_tokens": overlap_tokens,
            "chunk_tokenizer": tokenizer_id(embedder.tokenizer),
            "index_type": index_type,
            "index_params": params,
            "num_chunks": len(chunks),
            "datastore_tokenizer": datastore.tokenizer_id if datastore else None,
            "datastore_vocab_size": datastore.vocab_size if datastore else None,
        }
        manifest = write_store(out_dir, manifest, index, chunks, datastore)
        logger.info(
            "built store %s: %d chunks from %d documents, index %s, in %.1f s",
            out_dir,
            len(chunks),
            len(documents),
            index_type,
            time.perf_counter() - started,
        )
        return cls(
            out_dir,
            manifest,
            index,
            chunks,
            load_store_datastore(out_dir, manifest),
            embedder,
            datastore_tokenizer,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: EmbedderSpec = None,
        *,
        verify: bool = True,
    ) -> DocumentStore:
        """Load the store at ``path``.

        ``embedder`` defaults to the manifest's embedder, loaded on first use. A given
        embedder must have the manifest's name and the index's dimension. With ``verify``,
        every file's SHA-256 is checked against the manifest, which reads each file in full.
        File sizes are always checked.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            CorruptStoreError: a file is missing, truncated, altered or inconsistent.
            StoreVersionError: the store has a newer format version.
            EmbedderMismatchError: ``embedder`` differs from the store's in name or dimension.
        """
        path = Path(path)
        check_store_exists(path)
        manifest = read_manifest(path)
        loaded_embedder = check_embedder(path, manifest, embedder)
        check_required_files(path, manifest)
        verify_files(path, manifest["files"], check_hashes=verify)

        index = read_index(path, manifest)
        if loaded_embedder is not None:
            check_dimension(path, index, loaded_embedder)
        chunks = read_chunks(path / CHUNKS_FILE, manifest["num_chunks"])
        datastore = load_store_datastore(path, manifest)
        return cls(path, manifest, index, chunks, datastore, loaded_embedder)

    # Updating

    def add(
        self,
        documents: Iterable[Document],
        *,
        datastore_tokenizer: Any = None,
        batch_size: int = 64,
        show_progress: bool = True,
    ) -> int:
        """Chunk, embed and append ``documents``, rewrite the store atomically, and return the
        number of chunks added.

        Chunking uses the manifest's settings. IVF clusters are not retrained. If the store has
        a datastore, it is rebuilt over all chunks, which needs the tokenizer that built it:
        the one passed to ``build`` in this process or ``datastore_tokenizer``. Passing
        ``datastore_tokenizer`` to a store without a datastore creates one over all chunks.

        Raises:
            ValueError: the store has a datastore and no tokenizer is available, or
                ``datastore_tokenizer`` differs from the datastore's tokenizer.
        """
        # NOTE: no lock guards a store against other processes. When two processes add to one
        # store at once, each swaps in its own version, so the first one's chunks are lost.
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        tokenizer = self.datastore_tokenizer_for_add(datastore_tokenizer)
        new_chunks = chunk_documents(
            documents,
            self.embedder.tokenizer,
            self.manifest["chunk_tokens"],
            self.manifest["overlap_tokens"],
        )
        check_metadata_serializable(new_chunks)
        if not new_chunks and (tokenizer is None or self.datastore is not None):
            logger.info("add: the documents gave no chunks, store %s is unchanged", self.path)
            return 0

        vectors = embed_chunks(
            self.embedder, new_chunks, self.manifest["normalize"], batch_size, show_progress
        )
        index = faiss.clone_index(self._index)
        apply_search_params(index, self.manifest["index_type"], self.manifest["index_params"])
        if len(vectors):
            index.add(vectors)
        chunks = self.chunks + new_chunks

        datastore = None
        if tokenizer is not None:
            datastore = build_datastore(chunks, tokenizer, show_progress)
        manifest = dict(self.manifest)
        manifest["reader_rag_version"] = reader_rag_version()
        manifest["num_chunks"] = len(chunks)
        manifest["datastore_tokenizer"] = datastore.tokenizer_id if datastore else None
        manifest["datastore_vocab_size"] = datastore.vocab_size if datastore else None
        manifest.pop("files", None)
        manifest = write_store(self.path, manifest, index, chunks, datastore)

        self.manifest = manifest
        self.chunks = chunks
        self._index = index
        self._search_index = to_search_device(index, manifest["index_type"])
        self.datastore = load_store_datastore(self.path, manifest)
        self._datastore_tokenizer = tokenizer
        logger.info("added %d chunks to store %s (%d in all)", len(new_chunks), self.path, len(chunks))
        return len(new_chunks)

    def datastore_tokenizer_for_add(self, requested: Any) -> Any:
        """Return the tokenizer that ``add`` rebuilds the datastore with, or None for no datastore."""
        expected_id = self.manifest["datastore_tokenizer"]
        tokenizer = requested if requested is not None else self._datastore_tokenizer
        if tokenizer is None:
            if expected_id is not None:
                raise ValueError(
                    f"store {str(self.path)!r} has a corpus datastore built with tokenizer "
                    f"{expected_id!r}; pass that tokenizer as add(..., datastore_tokenizer=...) "
                    "so the new chunks are tokenized the same way"
                )
            return None
        if expected_id is None:
            return tokenizer
        given_id = tokenizer_id(tokenizer)
        expected_vocab = self.manifest["datastore_vocab_size"]
        if given_id != expected_id or len(tokenizer) != expected_vocab:
            raise ValueError(
                f"datastore_tokenizer {given_id!r} (vocabulary {len(tokenizer)}) differs from "
                f"the tokenizer of store {str(self.path)!r}: {expected_id!r} (vocabulary "
                f"{expected_vocab}); pass the tokenizer that built the store"
            )
        return tokenizer

    # Searching

    def search(self, query: str, k: int = 4) -> list[SearchResult]:
        """Return the ``k`` chunks with the highest score for ``query``, best first.

        Returns fewer than ``k`` results when the store has fewer chunks or, for IVF and HNSW,
        when the approximate search finds fewer.
        """
        if not isinstance(query, str):
            raise TypeError(
                f"search expects one query string, got {type(query).__name__}; "
                "use search_batch for several queries"
            )
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 4) -> list[list[SearchResult]]:
        """Return the results of ``search`` for each query, embedding all queries in one batch."""
        if isinstance(queries, str):
            raise TypeError("search_batch expects a sequence of query strings; use search for one")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int of at least 1, got {k!r}")
        if not queries:
            return []
        if len(self.chunks) == 0:
            return [[] for _ in queries]

        vectors = self.embedder.encode(list(queries), normalize=self.manifest["normalize"])
        scores, ids = self._search_index.search(vectors, min(k, len(self.chunks)))
        return [
            [
                SearchResult(self.chunks[int(chunk_id)], float(score))
                for score, chunk_id in zip(row_scores, row_ids)
                if chunk_id >= 0
            ]
            for row_scores, row_ids in zip(scores, ids)
        ]


# Settings and checks


def validate_build_settings(
    chunk_tokens: int | None, overlap_tokens: int, index_type: str, batch_size: int
) -> None:
    """Raise ValueError on invalid ``build`` settings, before any model is loaded."""
    if chunk_tokens is not None:
        validate_window(chunk_tokens, overlap_tokens)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def check_replaceable(out_dir: Path) -> None:
    """Raise unless ``out_dir`` is absent, an empty folder, or a folder with a store manifest."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file; pass a folder path for the store")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise ValueError(
            f"out_dir {str(out_dir)!r} is a non-empty folder without {MANIFEST_FILE}, so it is "
            "not a document store and building would delete its files; choose another out_dir"
        )


def check_store_exists(path: Path) -> None:
    """Raise FileNotFoundError when ``path`` is missing, naming a leftover previous version."""
    if path.is_dir():
        return
    leftovers = previous_versions(path)
    if leftovers:
        raise FileNotFoundError(
            f"store {str(path)!r} not found, but an interrupted write left its previous version "
            f"at {str(leftovers[-1])!r}; rename that folder to {str(path)!r} to restore it"
        )
    raise FileNotFoundError(
        f"store {str(path)!r} not found; build one with DocumentStore.build(documents, out_dir)"
    )


def check_required_files(path: Path, manifest: dict[str, Any]) -> None:
    """Raise CorruptStoreError when the manifest does not list the index and chunk files."""
    required = [INDEX_FILE, CHUNKS_FILE]
    if manifest["datastore_tokenizer"] is not None:
        required.append(f"{DATASTORE_DIR}/{datastore_files.TOKENS_FILE}")
        required.append(f"{DATASTORE_DIR}/{datastore_files.SUFFIX_ARRAY_FILE}")
    missing = [name for name in required if name not in manifest["files"]]
    if missing:
        raise CorruptStoreError(
            f"{str(path / MANIFEST_FILE)!r} does not list the store files {missing}; rebuild "
            "the store with DocumentStore.build"
        )


def resolve_embedder(embedder: EmbedderSpec) -> Embedder:
    """Return ``embedder`` itself, or load it by name or path."""
    if isinstance(embedder, Embedder):
        return embedder
    if embedder is None or isinstance(embedder, (str, os.PathLike)):
        return load_embedder(embedder)
    raise TypeError(
        f"embedder must be an Embedder, a model name or path, or None, got "
        f"{type(embedder).__name__}; wrap a SentenceTransformer with load_embedder(path)"
    )


def check_embedder(
    path: Path, manifest: dict[str, Any], embedder: EmbedderSpec
) -> Embedder | None:
    """Check a requested embedder's name against the manifest and return it if loaded.

    A name or path is compared without loading the model. It is then loaded, because the
    caller asked for it. None returns None, so the manifest's embedder loads on first use.
    """
    if embedder is None:
        return None
    if isinstance(embedder, Embedder):
        name = embedder.name
    elif isinstance(embedder, (str, os.PathLike)):
        name = resolve_embedder_name(embedder)[0]
    else:
        raise TypeError(
            f"embedder must be an Embedder, a model name or path, or None, got "
            f"{type(embedder).__name__}"
        )
    if name != manifest["embedder"]:
        raise EmbedderMismatchError(
            f"store {str(path)!r} was built with embedder {manifest['embedder']!r}, but "
            f"{name!r} was given; load it with embedder=None to use its own embedder, or "
            "rebuild the store with the new one"
        )
    return resolve_embedder(embedder)


def check_dimension(path: Path, index: faiss.Index, embedder: Embedder) -> None:
    """Raise EmbedderMismatchError when the index and the embedder differ in dimension."""
    if index.d != embedder.dimension:
        raise EmbedderMismatchError(
            f"store {str(path)!r} has {index.d}-dimensional vectors in {INDEX_FILE}, but "
            f"embedder {embedder.name!r} returns {embedder.dimension} dimensions; the model "
            "at that name or path has changed, so rebuild the store with DocumentStore.build"
        )


def default_chunk_tokens(embedder: Embedder) -> int:
    """Return the embedder's maximum input length minus its special tokens, capped at 256."""
    max_length = embedder.max_seq_length
    if max_length is None:
        return MAX_DEFAULT_CHUNK_TOKENS
    special = embedder.tokenizer.num_special_tokens_to_add(pair=False)
    return max(1, min(MAX_DEFAULT_CHUNK_TOKENS, max_length - special))


def warn_if_truncated(embedder: Embedder, chunk_tokens: int) -> None:
    """Log a warning when chunks may exceed the embedder's maximum input length."""
    max_length = embedder.max_seq_length
    if max_length is None:
        return
    special = embedder.tokenizer.num_special_tokens_to_add(pair=False)
    if chunk_tokens + special > max_length:
        logger.warning(
            "chunk_tokens=%d plus %d special tokens exceeds the maximum input of embedder %s "
            "(%d tokens), so the end of the longest chunks is not embedded; use "
            "chunk_tokens<=%d",
            chunk_tokens,
            special,
            embedder.name,
            max_length,
            max_length - special,
        )


def check_metadata_serializable(chunks: Sequence[Chunk]) -> None:
    """Raise ValueError naming the first chunk whose metadata cannot be written as JSON."""
    checked: set[int] = set()
    for chunk in chunks:
        # Chunks of one document share one metadata dict, so each dict is checked once.
        if id(chunk.metadata) in checked:
            continue
        checked.add(id(chunk.metadata))
        try:
            json.dumps(chunk.metadata)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"metadata of document {chunk.source!r} cannot be stored as JSON ({error}); "
                "use only str, int, float, bool, None, lists and dicts"
            ) from None


# Embedding and tokenizing


def embed_chunks(
    embedder: Embedder,
    chunks: Sequence[Chunk],
    normalize: bool,
    batch_size: int,
    show_progress: bool,
) -> np.ndarray:
    """Embed the chunk texts in batches and return a float32 array of shape ``(n, dimension)``."""
    vectors = np.zeros((len(chunks), embedder.dimension), dtype=np.float32)
    with tqdm(
        total=len(chunks), desc="embedding chunks", unit="chunk", disable=not show_progress
    ) as progress:
        for start in range(0, len(chunks), batch_size):
            batch = [chunk.text for chunk in chunks[start : start + batch_size]]
            vectors[start : start + len(batch)] = embedder.encode(batch, batch_size, normalize)
            progress.update(len(batch))
    return vectors


def build_datastore(chunks: Sequence[Chunk], tokenizer: Any, show_progress: bool) -> CorpusDatastore:
    """Tokenize the chunk texts without special tokens and build an in-memory datastore.

    The vocabulary size is ``len(tokenizer)``, which counts added tokens.
    """
    token_id_lists: list[list[int]] = []
    with tqdm(
        total=len(chunks), desc="tokenizing for datastore", unit="chunk", disable=not show_progress
    ) as progress:
        for start in range(0, len(chunks), TOKENIZE_BATCH):
            texts = [chunk.text for chunk in chunks[start : start + TOKENIZE_BATCH]]
            encoded = tokenizer(texts, add_special_tokens=False, verbose=False)
            token_id_lists.extend(encoded["input_ids"])
            progress.update(len(texts))
    return CorpusDatastore.build(token_id_lists, len(tokenizer), tokenizer_id=tokenizer_id(tokenizer))


# Files


def write_store(
    out_dir: Path,
    manifest: dict[str, Any],
    index: faiss.Index,
    chunks: Sequence[Chunk],
    datastore: CorpusDatastore | None,
) -> dict[str, Any]:
    """Write a complete store to a staging folder, swap it in as ``out_dir``, and return the
    manifest with its ``files`` entry."""
    with atomic_directory(out_dir) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        write_chunks(staging / CHUNKS_FILE, chunks)
        if datastore is not None:
            datastore.save(staging / DATASTORE_DIR)
        manifest = {**manifest, "files": describe_files(staging)}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def write_chunks(path: Path, chunks: Sequence[Chunk]) -> None:
    """Write one JSON object per chunk, one per line."""
    with open(path, "w", encoding="utf-8") as file:
        for chunk in chunks:
            file.write(json.dumps(chunk.to_json(), ensure_ascii=False) + "\n")


def read_index(path: Path, manifest: dict[str, Any]) -> faiss.Index:
    """Read ``index.faiss`` and check its size and dimension against the manifest."""
    index_path = path / INDEX_FILE
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as error:
        raise CorruptStoreError(
            f"FAISS could not read {str(index_path)!r} ({str(error).splitlines()[0]}); rebuild "
            "the store with DocumentStore.build"
        ) from None
    if index.d != manifest["dimension"] or index.ntotal != manifest["num_chunks"]:
        raise CorruptStoreError(
            f"{str(index_path)!r} has {index.ntotal} vectors of dimension {index.d}, but the "
            f"manifest records {manifest['num_chunks']} of dimension {manifest['dimension']}; "
            "rebuild the store with DocumentStore.build"
        )
    check_index_type(index_path, index, manifest["index_type"], manifest["index_params"])
    apply_search_params(index, manifest["index_type"], manifest["index_params"])
    return index


# Search parameters that each index type records in the manifest's index_params.
SEARCH_PARAMS = {"flat": (), "ivf": ("nprobe",), "hnsw": ("ef_search",)}


def check_index_type(
    index_path: Path, index: faiss.Index, index_type: str, params: dict[str, Any]
) -> None:
    """Raise CorruptStoreError when the manifest's index type or search parameters do not fit
    the FAISS index that was read."""
    fix = "rebuild the store with DocumentStore.build"
    kinds = {"flat": faiss.IndexFlat, "ivf": faiss.IndexIVF, "hnsw": faiss.IndexHNSW}
    if index_type not in kinds:
        raise CorruptStoreError(
            f"the manifest of {str(index_path.parent)!r} records index_type {index_type!r}, "
            f"which is not one of {', '.join(INDEX_TYPES)}; {fix}"
        )
    if not isinstance(index, kinds[index_type]):
        raise CorruptStoreError(
            f"the manifest of {str(index_path.parent)!r} records index_type {index_type!r}, but "
            f"{str(index_path)!r} holds a {type(index).__name__}; {fix}"
        )
    for name in SEARCH_PARAMS[index_type]:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CorruptStoreError(
                f"the manifest of {str(index_path.parent)!r} records index_params {name}="
                f"{value!r} for index_type {index_type!r}; it must be a positive integer, so "
                f"{fix}"
            )


def read_chunks(path: Path, expected: int) -> list[Chunk]:
    """Read ``chunks.jsonl`` and check that it has ``expected`` chunks."""
    chunks = []
    with open(path, "rb") as file:
        for line_number, line in enumerate(file, start=1):
            try:
                chunks.append(Chunk.from_json(json.loads(line.decode("utf-8"))))
            except (
                UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, RecursionError
            ) as error:
                raise CorruptStoreError(
                    f"{str(path)!r} line {line_number} is not a valid chunk ({error!r}); "
                    "rebuild the store with DocumentStore.build"
                ) from None
    if len(chunks) != expected:
        raise CorruptStoreError(
            f"{str(path)!r} has {len(chunks)} chunks, but the manifest records {expected}; "
            "rebuild the store with DocumentStore.build"
        )
    return chunks


def load_store_datastore(path: Path, manifest: dict[str, Any]) -> CorpusDatastore | None:
    """Memory-map the store's datastore, or return None when the manifest records none."""
    if manifest["datastore_tokenizer"] is None:
        return None
    try:
        datastore = CorpusDatastore.load(path / DATASTORE_DIR)
    except (DatastoreError, FileNotFoundError) as error:
        raise CorruptStoreError(f"store {str(path)!r} has an unreadable datastore: {error}") from None
    if datastore.vocab_size != manifest["datastore_vocab_size"]:
        raise CorruptStoreError(
            f"datastore of store {str(path)!r} has vocab_size {datastore.vocab_size}, but the "
            f"manifest records {manifest['datastore_vocab_size']}; rebuild the store"
        )
    return datastore
