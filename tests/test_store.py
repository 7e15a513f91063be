"""Tests for chunking and DocumentStore, with the real embedder and real FAISS indexes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader_rag.retrieval.chunking import chunk_documents, token_windows
from reader_rag.retrieval.documents import Document
from reader_rag.retrieval.manifest import describe_files
from reader_rag.retrieval.store import (
    CorruptStoreError,
    DocumentStore,
    EmbedderMismatchError,
    StoreVersionError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Prompts whose passages go into the shared store.
STORE_PROMPTS = 10


def passage_documents(prompts) -> list[Document]:
    """One Document per passage, with source ``q<question_id>#<passage number>``."""
    return [
        Document(passage, f"q{prompt.question_id}#{number}", {"question_id": prompt.question_id})
        for prompt in prompts
        for number, passage in enumerate(prompt.passages)
    ]


def question_of_source(source: str) -> int:
    return int(source[1:].split("#")[0])


# Chunking


def test_token_windows_cover_and_overlap() -> None:
    assert token_windows(0, 4, 1) == []
    assert token_windows(3, 4, 1) == [(0, 3)]
    assert token_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert token_windows(7, 4, 1) == [(0, 4), (3, 7)]


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(0, 0), (4, 4), (4, -1)])
def test_invalid_window_raises(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match=f"got {min(chunk_tokens, overlap_tokens)}"):
        token_windows(10, chunk_tokens, overlap_tokens)


def test_chunks_are_exact_substrings(rag_prompts, minilm_tokenizer) -> None:
    documents = passage_documents(rag_prompts[:3])

    chunks = chunk_documents(documents, minilm_tokenizer, chunk_tokens=40, overlap_tokens=8)

    by_source = {document.source: document for document in documents}
    assert len(chunks) > len(documents)
    for chunk in chunks:
        document = by_source[chunk.source]
        assert document.text[chunk.start : chunk.end] == chunk.text
        assert chunk.metadata == document.metadata
        token_count = len(minilm_tokenizer(chunk.text, add_special_tokens=False)["input_ids"])
        assert token_count <= 40 + 2


def test_chunks_overlap_by_setting(rag_prompts, minilm_tokenizer) -> None:
    document = passage_documents(rag_prompts[:1])[0]
    encoding = minilm_tokenizer(
        document.text, add_special_tokens=False, return_offsets_mapping=True
    )
    offsets = encoding["offset_mapping"]

    chunks = chunk_documents([document], minilm_tokenizer, chunk_tokens=30, overlap_tokens=5)

    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    assert chunks[0].start == offsets[0][0]
    assert chunks[-1].end == offsets[-1][1]
    # The second chunk starts at token 25, the sixth token from the end of the first.
    assert chunks[1].start == offsets[25][0]
    assert chunks[0].end == offsets[29][1]


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab cé北😀\n.,")), max_size=120),
    chunk_tokens=st.integers(1, 12),
    overlap=st.integers(0, 11),
)
def test_chunks_of_random_text_are_substrings(
    minilm_tokenizer, text: str, chunk_tokens: int, overlap: int
) -> None:
    overlap = min(overlap, chunk_tokens - 1)
    document = Document(text, "random")

    chunks = chunk_documents([document], minilm_tokenizer, chunk_tokens, overlap)

    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
    if text.strip():
        assert chunks
        assert text[: chunks[0].start].strip() == ""
        assert text[chunks[-1].end :].strip() == ""


# Shared store: the passages of the first STORE_PROMPTS Spec-Bench rag prompts.


@pytest.fixture(scope="session")
def built_store(tmp_path_factory, rag_prompts, embedder) -> DocumentStore:
    path = tmp_path_factory.mktemp("stores") / "rag"
    return DocumentStore.build(
        passage_documents(rag_prompts[:STORE_PROMPTS]),
        path,
        embedder,
        datastore_tokenizer=embedder.tokenizer,
        show_progress=False,
    )


@pytest.fixture
def store_copy(built_store: DocumentStore, tmp_path: Path) -> Path:
    """A private copy of the shared store folder, for tests that change or damage it."""
    path = tmp_path / "store"
    shutil.copytree(built_store.path, path)
    return path


def rewrite_manifest(path: Path, **changes) -> None:
    """Change manifest fields and refresh the file sizes and hashes that it records."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    manifest["files"] = describe_files(path)
    (path / "manifest.json").write_text(json.dumps(manifest))


# Building, searching and loading


@pytest.mark.slow
def test_build_writes_manifest(built_store: DocumentStore, embedder) -> None:
    manifest = json.loads((built_store.path / "manifest.json").read_text())

    assert manifest["format_version"] == 1
    assert manifest["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["dimension"] == 384
    assert manifest["normalize"] is True
    assert manifest["chunk_tokens"] == 254
    assert manifest["overlap_tokens"] == 32
    assert manifest["index_type"] == "flat"
    assert manifest["num_chunks"] == len(built_store.chunks)
    assert manifest["datastore_tokenizer"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["datastore_vocab_size"] == len(embedder.tokenizer)
    assert isinstance(manifest["reader_rag_version"], str)
    assert set(manifest["files"]) == {
        "index.faiss",
        "chunks.jsonl",
        "datastore/tokens.npy",
        "datastore/suffix_array.npy",
        "datastore/datastore.json",
    }


@pytest.mark.slow
def test_search_finds_own_passages(built_store: DocumentStore, rag_prompts) -> None:
    prompts = rag_prompts[:STORE_PROMPTS]

    results = [built_store.search(prompt.question, k=4) for prompt in prompts]

    hits = sum(
        question_of_source(result[0].chunk.source) == prompt.question_id
        for prompt, result in zip(prompts, results)
    )
    assert hits >= 8
    for result in results:
        assert len(result) == 4
        scores = [item.score for item in result]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= score <= 1.0 + 1e-5 for score in scores)


@pytest.mark.slow
def test_search_exact_passage_scores_one(built_store: DocumentStore) -> None:
    chunk = built_store.chunks[7]

    result = built_store.search(chunk.text, k=1)[0]

    assert result.chunk == chunk
    assert result.score == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_search_batch_equals_search(built_store: DocumentStore, rag_prompts) -> None:
    questions = [prompt.question for prompt in rag_prompts[:3]]

    batch = built_store.search_batch(questions, k=3)

    for question, results in zip(questions, batch):
        single = built_store.search(question, k=3)
        assert [r.chunk for r in results] == [r.chunk for r in single]
        assert [r.score for r in results] == pytest.approx([r.score for r in single], abs=1e-5)


@pytest.mark.slow
def test_search_k_above_size_returns_all(built_store: DocumentStore) -> None:
    results = built_store.search("forest", k=10_000)

    assert len(results) == len(built_store.chunks)


@pytest.mark.slow
def test_search_argument_errors(built_store: DocumentStore) -> None:
    with pytest.raises(ValueError, match="k must be an int of at least 1, got 0"):
        built_store.search("forest", k=0)
    with pytest.raises(TypeError, match="use search_batch"):
        built_store.search(["forest"])  # type: ignore[arg-type]


@pytest.mark.slow
def test_load_matches_built_store(built_store: DocumentStore, rag_prompts) -> None:
    loaded = DocumentStore.load(built_store.path)

    assert loaded.chunks == built_store.chunks
    question = rag_prompts[0].question
    assert [r.chunk for r in loaded.search(question)] == [
        r.chunk for r in built_store.search(question)
    ]
    assert loaded.datastore is not None
    assert isinstance(loaded.datastore.tokens, np.memmap)
    loaded.datastore.check_integrity()


@pytest.mark.slow
def test_load_accepts_embedder_by_name(built_store: DocumentStore) -> None:
    loaded = DocumentStore.load(built_store.path, embedder="all-MiniLM-L6-v2")

    assert loaded.embedder.name == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_datastore_holds_chunk_tokens(built_store: DocumentStore, embedder) -> None:
    datastore = built_store.datastore
    chunk_ids = embedder.tokenizer(built_store.chunks[3].text, add_special_tokens=False)[
        "input_ids"
    ]

    length, lo, hi = datastore.longest_match(chunk_ids[:20], max_length=16)

    assert length == 16
    assert tuple(chunk_ids[20:26]) in datastore.continuations(lo, hi, length, depth=6)


@pytest.mark.slow
def test_store_without_datastore(tmp_path: Path, rag_prompts, embedder) -> None:
    store = DocumentStore.build(
        passage_documents(rag_prompts[:1]), tmp_path / "plain", embedder, show_progress=False
    )

    assert store.datastore is None
    assert DocumentStore.load(store.path).datastore is None


@pytest.mark.slow
def test_empty_documents_build_empty_store(tmp_path: Path, embedder) -> None:
    store = DocumentStore.build([], tmp_path / "empty", embedder, show_progress=False)

    assert len(store) == 0
    assert store.search("anything") == []
    assert len(DocumentStore.load(store.path)) == 0


@pytest.mark.slow
def test_metadata_not_json_raises(tmp_path: Path, embedder) -> None:
    document = Document("Some text.", "odd", {"when": object()})

    with pytest.raises(ValueError, match="metadata of document 'odd' cannot be stored as JSON"):
        DocumentStore.build([document], tmp_path / "odd", embedder, show_progress=False)


def test_build_refuses_non_store_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious", encoding="utf-8")

    with pytest.raises(ValueError, match="not a document store"):
        DocumentStore.build([], tmp_path, show_progress=False)
    assert (tmp_path / "thesis.tex").read_text(encoding="utf-8") == "precious"


def test_build_invalid_index_type_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index_type must be one of flat, ivf, hnsw, got 'lsh'"):
        DocumentStore.build([], tmp_path / "store", index_type="lsh")


# Index types


# 32-token chunks give about 200 chunks, enough to train IVF.
SMALL_CHUNKS = {"chunk_tokens": 32, "overlap_tokens": 4, "show_progress": False}


@pytest.fixture(scope="session")
def small_chunk_flat_store(tmp_path_factory, rag_prompts, embedder) -> DocumentStore:
    path = tmp_path_factory.mktemp("stores") / "flat-small-chunks"
    documents = passage_documents(rag_prompts[:STORE_PROMPTS])
    return DocumentStore.build(documents, path, embedder, **SMALL_CHUNKS)


@pytest.mark.slow
@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_index_agrees_with_flat(
    index_type: str, tmp_path: Path, small_chunk_flat_store, rag_prompts, embedder
) -> None:
    flat = small_chunk_flat_store
    documents = passage_documents(rag_prompts[:STORE_PROMPTS])
    approximate = DocumentStore.build(
        documents, tmp_path / index_type, embedder, index_type=index_type, **SMALL_CHUNKS
    )
    loaded = DocumentStore.load(approximate.path)
    questions = [prompt.question for prompt in rag_prompts[:STORE_PROMPTS]]

    exact_top = [r[0].chunk for r in flat.search_batch(questions, k=1)]
    approximate_top = [r[0].chunk for r in loaded.search_batch(questions, k=1)]

    assert loaded.manifest["index_type"] == index_type
    assert sum(a == b for a, b in zip(exact_top, approximate_top)) >= 9


@pytest.mark.slow
def test_ivf_with_too_few_chunks_raises(tmp_path: Path, rag_prompts, embedder) -> None:
    documents = passage_documents(rag_prompts[:2])

    with pytest.raises(ValueError, match=r"needs at least 156 chunks.*but got 10; use index_type='flat'"):
        DocumentStore.build(documents, tmp_path / "ivf", embedder, index_type="ivf")


# Adding documents


@pytest.mark.slow
def test_add_appends_and_persists(store_copy: Path, rag_prompts, embedder) -> None:
    store = DocumentStore.load(store_copy, embedder)
    before = len(store)
    new_prompt = rag_prompts[STORE_PROMPTS]

    added = store.add(
        passage_documents([new_prompt]),
        datastore_tokenizer=embedder.tokenizer,
        show_progress=False,
    )

    reloaded = DocumentStore.load(store_copy)
    assert added == len(new_prompt.passages)
    assert len(store) == before + added
    assert len(reloaded) == before + added
    top = reloaded.search(new_prompt.question, k=1)[0]
    assert question_of_source(top.chunk.source) == new_prompt.question_id
    reloaded.datastore.check_integrity()
    new_ids = embedder.tokenizer(new_prompt.passages[0], add_special_tokens=False)["input_ids"]
    assert reloaded.datastore.longest_match(new_ids[:12], max_length=12)[0] == 12


@pytest.mark.slow
def test_add_without_datastore_tokenizer_raises(store_copy: Path) -> None:
    store = DocumentStore.load(store_copy)

    with pytest.raises(ValueError, match="pass that tokenizer as add"):
        store.add([Document("New text.", "new")], show_progress=False)
    assert len(DocumentStore.load(store_copy)) == len(store)


@pytest.mark.slow
def test_add_creates_datastore_when_missing(tmp_path: Path, rag_prompts, embedder) -> None:
    store = DocumentStore.build(
        passage_documents(rag_prompts[:1]), tmp_path / "plain", embedder, show_progress=False
    )

    store.add(
        passage_documents(rag_prompts[1:2]),
        datastore_tokenizer=embedder.tokenizer,
        show_progress=False,
    )

    assert store.datastore is not None
    assert store.datastore.num_chunks == len(store)


# Load errors


def test_load_missing_store_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.*DocumentStore.build"):
        DocumentStore.load(tmp_path / "nowhere")


@pytest.mark.slow
def test_embedder_mismatch_names_both(store_copy: Path) -> None:
    with pytest.raises(
        EmbedderMismatchError,
        match=r"built with embedder 'sentence-transformers/all-MiniLM-L6-v2'.*'BAAI/bge-small-en'",
    ):
        DocumentStore.load(store_copy, embedder="BAAI/bge-small-en")


@pytest.mark.slow
def test_index_dimension_mismatch_raises(store_copy: Path, embedder) -> None:
    manifest = json.loads((store_copy / "manifest.json").read_text())
    index = faiss.IndexFlatIP(128)
    index.add(np.zeros((manifest["num_chunks"], 128), dtype=np.float32))
    faiss.write_index(index, str(store_copy / "index.faiss"))
    rewrite_manifest(store_copy, dimension=128)

    with pytest.raises(EmbedderMismatchError, match=r"128-dimensional.*returns 384 dimensions"):
        DocumentStore.load(store_copy, embedder)

    lazy = DocumentStore.load(store_copy)
    with pytest.raises(EmbedderMismatchError, match="128-dimensional"):
        lazy.search("forest")


@pytest.mark.slow
def test_index_disagreeing_with_manifest_raises(store_copy: Path) -> None:
    index = faiss.IndexFlatIP(384)
    index.add(np.zeros((3, 384), dtype=np.float32))
    faiss.write_index(index, str(store_copy / "index.faiss"))
    rewrite_manifest(store_copy)

    with pytest.raises(CorruptStoreError, match="has 3 vectors of dimension 384"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_truncated_index_raises(store_copy: Path) -> None:
    data = (store_copy / "index.faiss").read_bytes()
    (store_copy / "index.faiss").write_bytes(data[: len(data) // 2])

    with pytest.raises(CorruptStoreError, match=r"index\.faiss' has \d+ bytes.*truncated"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_changed_byte_fails_checksum(store_copy: Path) -> None:
    data = bytearray((store_copy / "chunks.jsonl").read_bytes())
    data[10] = ord("X") if data[10] != ord("X") else ord("Y")
    (store_copy / "chunks.jsonl").write_bytes(bytes(data))

    with pytest.raises(CorruptStoreError, match=r"chunks\.jsonl' does not match its SHA-256"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_unreadable_index_raises(store_copy: Path) -> None:
    size = (store_copy / "index.faiss").stat().st_size
    (store_copy / "index.faiss").write_bytes(b"\x00" * size)
    rewrite_manifest(store_copy)

    with pytest.raises(CorruptStoreError, match=r"FAISS could not read .*index\.faiss"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_invalid_chunk_line_raises(store_copy: Path) -> None:
    lines = (store_copy / "chunks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"text": "missing fields"}\n'
    (store_copy / "chunks.jsonl").write_text("".join(lines), encoding="utf-8")
    rewrite_manifest(store_copy)

    with pytest.raises(CorruptStoreError, match=r"chunks\.jsonl' line 3 is not a valid chunk"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_missing_file_raises(store_copy: Path) -> None:
    (store_copy / "datastore" / "suffix_array.npy").unlink()

    with pytest.raises(CorruptStoreError, match=r"suffix_array\.npy' is missing"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_missing_manifest_raises(store_copy: Path) -> None:
    (store_copy / "manifest.json").unlink()

    with pytest.raises(CorruptStoreError, match="has no manifest.json"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_half_written_manifest_raises(store_copy: Path) -> None:
    text = (store_copy / "manifest.json").read_text()
    (store_copy / "manifest.json").write_text(text[: len(text) // 2])

    with pytest.raises(CorruptStoreError, match="manifest.json' is not valid JSON"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_manifest_missing_field_raises(store_copy: Path) -> None:
    manifest = json.loads((store_copy / "manifest.json").read_text())
    del manifest["num_chunks"]
    (store_copy / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CorruptStoreError, match="invalid or missing field 'num_chunks'"):
        DocumentStore.load(store_copy)


@pytest.mark.slow
def test_newer_format_version_raises(store_copy: Path) -> None:
    rewrite_manifest(store_copy, format_version=2)

    with pytest.raises(StoreVersionError, match="format version 2.*reads up to version 1.*upgrade"):
        DocumentStore.load(store_copy)


# Interrupted writes: a subprocess pauses at one step of a build, and the test kills it
# with SIGKILL there.

INTERRUPTED_BUILD = r"""
import os, sys, time
from pathlib import Path

import reader_rag.atomic_dir as atomic_dir
import reader_rag.retrieval.store as store_module
from reader_rag.retrieval.documents import Document

store_path, marker, step = sys.argv[1:4]


def pause():
    Path(marker).write_text(step)
    time.sleep(600)


if step == "embedding":
    def embed_chunks(*args, **kwargs):
        pause()
    store_module.embed_chunks = embed_chunks
elif step == "writing":
    write_chunks = store_module.write_chunks
    def write_half(path, chunks):
        write_chunks(path, chunks[: len(chunks) // 2])
        pause()
    store_module.write_chunks = write_half
elif step == "swapped":
    exchange_paths = atomic_dir.exchange_paths
    def exchange_then_pause(first, second):
        exchange_paths(first, second)
        pause()
    atomic_dir.exchange_paths = exchange_then_pause
elif step == "between-renames":
    atomic_dir.exchange_paths = lambda first, second: False
    rename = os.rename
    def rename_then_pause(source, target):
        rename(source, target)
        if ".previous-" in str(target):
            pause()
    os.rename = rename_then_pause

documents = [Document(f"Replacement passage number {i} about rivers.", f"new#{i}") for i in range(5)]
store_module.DocumentStore.build(documents, store_path, show_progress=False)
"""


def kill_build_at(step: str, store_path: Path, tmp_path: Path) -> None:
    """Run a build of ``store_path`` in a subprocess and SIGKILL it when it reaches ``step``."""
    marker = tmp_path / f"{step}.marker"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_BUILD, str(store_path), str(marker), step],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if process.poll() is not None:
                output = process.stderr.read().decode(errors="replace")
                pytest.fail(f"build subprocess exited with {process.returncode} before {step}:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail(f"build subprocess did not reach {step} within 300 s")
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("step", ["embedding", "writing"])
def test_killed_build_keeps_previous_store(
    step: str, store_copy: Path, built_store: DocumentStore, tmp_path: Path, embedder
) -> None:
    kill_build_at(step, store_copy, tmp_path)

    loaded = DocumentStore.load(store_copy)
    assert loaded.chunks == built_store.chunks
    assert loaded.search("forest", k=1)

    # The next build removes the staging folder that the killed process left.
    DocumentStore.build([Document("Fresh text.", "fresh")], store_copy, embedder, show_progress=False)
    assert [p.name for p in store_copy.parent.iterdir() if p.name.startswith(".store.tmp-")] == []


@pytest.mark.slow
def test_build_killed_after_swap_is_complete(store_copy: Path, tmp_path: Path) -> None:
    kill_build_at("swapped", store_copy, tmp_path)

    loaded = DocumentStore.load(store_copy)
    assert [chunk.source for chunk in loaded.chunks] == [f"new#{i}" for i in range(5)]


@pytest.mark.slow
def test_build_killed_between_fallback_renames(
    store_copy: Path, built_store: DocumentStore, tmp_path: Path
) -> None:
    kill_build_at("between-renames", store_copy, tmp_path)

    with pytest.raises(FileNotFoundError, match=r"previous version at .*\.store\.previous-"):
        DocumentStore.load(store_copy)
    previous = next(store_copy.parent.glob(".store.previous-*"))
    previous.rename(store_copy)
    assert DocumentStore.load(store_copy).chunks == built_store.chunks
