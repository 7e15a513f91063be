"""Fuzz tests of the document loaders and the store loader.

Hypothesis writes random, mutated and truncated files, and each test checks that loading them
either succeeds or raises one of the documented exception types, never anything else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reader_rag.retrieval.documents import Document, load_documents
from reader_rag.retrieval.manifest import describe_files
from reader_rag.retrieval.store import (
    CorruptStoreError,
    DocumentStore,
    EmbedderMismatchError,
    StoreVersionError,
)

# The exception types that load_documents documents. Every message names the path.
DOCUMENT_ERRORS = (ValueError, FileNotFoundError)
STORE_ERRORS = (CorruptStoreError, StoreVersionError, EmbedderMismatchError)
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def load_or_documented_error(paths: list[Path]) -> list[Document] | None:
    """Load ``paths`` and return the documents, or None after a documented error naming a path."""
    try:
        return load_documents(paths)
    except DOCUMENT_ERRORS as error:
        assert any(str(path) in str(error) for path in paths), error
        return None


# Document loaders

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["text", "id", "title", "source", "x"]), children, max_size=4
    ),
    max_leaves=12,
)


@st.composite
def jsonl_bytes(draw) -> bytes:
    """JSONL-like bytes: valid rows, rows of any JSON value, random text and random bytes."""
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(["row", "value", "text", "bytes", "nested"]))
        if kind == "row":
            fields = st.dictionaries(st.sampled_from(["id", "title"]), json_values, max_size=2)
            row = {"text": draw(st.text()), **draw(fields)}
            line = json.dumps(row, ensure_ascii=draw(st.booleans()))
            lines.append(line.encode("utf-8", "surrogatepass"))
        elif kind == "value":
            lines.append(json.dumps(draw(json_values)).encode())
        elif kind == "text":
            lines.append(draw(st.text()).encode("utf-8", "surrogatepass"))
        elif kind == "nested":
            depth = draw(st.integers(min_value=1, max_value=100_000))
            lines.append(b'{"text": ' + b"[" * depth + b"]" * depth + b"}")
        else:
            lines.append(draw(st.binary(max_size=40)))
    return b"\n".join(lines)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".txt", ".md", ".jsonl", ""]))
def test_random_file_bytes(data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"document{suffix}")
        path.write_bytes(data)

        documents = load_or_documented_error([path])

    if documents is not None:
        assert all(document.text.strip() for document in documents)


@FUZZ_SETTINGS
@given(data=jsonl_bytes())
def test_random_jsonl_rows(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "rows.jsonl")
        path.write_bytes(data)

        documents = load_or_documented_error([path])

    for document in documents or []:
        assert document.text.strip()
        # Every loaded text can be encoded again, so the tokenizers and embedders accept it.
        document.text.encode("utf-8")


@FUZZ_SETTINGS
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["a.txt", "b.jsonl", ".hidden", "sub/c.txt", ".git/d.txt", "e.bin"]),
            st.binary(max_size=200) | jsonl_bytes(),
        ),
        max_size=5,
    )
)
def test_random_folder(files: list[tuple[str, bytes]]):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder, "corpus")
        root.mkdir()
        for name, data in files:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        documents = load_or_documented_error([root])

    for document in documents or []:
        assert ".hidden" not in document.source
        assert ".git" not in document.source


@FUZZ_SETTINGS
@given(cut=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_utf8_file(cut: float):
    text = "Tōkyō 東京 🚀 naïve café — مرحبا\n" * 4
    data = text.encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        row = json.dumps({"text": text}, ensure_ascii=False).encode()
        for suffix, payload in [(".txt", data), (".jsonl", row)]:
            path = Path(folder, f"cut{suffix}")
            path.write_bytes(payload[: int(len(payload) * cut)])

            documents = load_or_documented_error([path])

            if documents:
                assert text.startswith(documents[0].text)


def test_deeply_nested_jsonl_row_raises(tmp_path: Path):
    path = tmp_path / "nested.jsonl"
    path.write_bytes(b'{"text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n")

    with pytest.raises(ValueError, match="line 1"):
        load_documents([path])


def test_lone_surrogate_in_jsonl_raises(tmp_path: Path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken \\ud800 half"}\n', encoding="utf-8")

    with pytest.raises(ValueError, match="line 2.*surrogate"):
        load_documents([path])


# Store loader


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory, rag_prompts, embedder) -> Path:
    """A small flat store with a corpus datastore, from the passages of two prompts."""
    documents = [
        Document(passage, f"q{prompt.question_id}#{number}")
        for prompt in rag_prompts[:2]
        for number, passage in enumerate(prompt.passages)
    ]
    path = tmp_path_factory.mktemp("fuzz") / "store"
    DocumentStore.build(
        documents, path, embedder, datastore_tokenizer=embedder.tokenizer, show_progress=False
    )
    return path


def store_files(store: Path) -> list[str]:
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())


def load_store_or_documented_error(path: Path, verify: bool) -> DocumentStore | None:
    try:
        return DocumentStore.load(path, verify=verify)
    except STORE_ERRORS:
        return None


@st.composite
def byte_mutations(draw, size: int) -> tuple[str, int, bytes]:
    """A truncation, an overwrite or an insertion at a random offset of a ``size``-byte file."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    offset = draw(st.integers(min_value=0, max_value=max(size - 1, 0)))
    return kind, offset, draw(st.binary(min_size=1, max_size=16))


def mutate(data: bytes, kind: str, offset: int, payload: bytes) -> bytes:
    if kind == "truncate":
        return data[:offset]
    if kind == "overwrite":
        return data[:offset] + payload + data[offset + len(payload) :]
    return data[:offset] + payload + data[offset:]


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_store_file(fuzz_store: Path, tmp_path: Path, data):
    name = data.draw(st.sampled_from(store_files(fuzz_store)))
    original = (fuzz_store / name).read_bytes()
    kind, offset, payload = data.draw(byte_mutations(len(original)))
    changed = mutate(original, kind, offset, payload)
    assume(changed != original)
    copy = tmp_path / f"store-{data.draw(st.integers(0, 10**9))}"
    shutil.copytree(fuzz_store, copy)
    (copy / name).write_bytes(changed)

    # Every file but the manifest is covered by its SHA-256, so a change fails to load.
    loaded = load_store_or_documented_error(copy, verify=True)
    if name != "manifest.json":
        assert loaded is None, f"{kind} of {name} at {offset} was not detected"
    # Without hashes, only the text files are fuzzed. An altered index.faiss or .npy file of
    # the recorded size reaches FAISS or NumPy, which do not guard against every bad value.
    if name.endswith((".json", ".jsonl")):
        load_store_or_documented_error(copy, verify=False)
    shutil.rmtree(copy)


MANIFEST_PATHS = [
    ("format_version",), ("embedder",), ("dimension",), ("normalize",), ("index_type",),
    ("index_params",), ("num_chunks",), ("datastore_tokenizer",), ("datastore_vocab_size",),
    ("files",), ("files", "index.faiss"), ("files", "chunks.jsonl", "bytes"),
    ("files", "index.faiss", "sha256"),
]


@FUZZ_SETTINGS
@given(path=st.sampled_from(MANIFEST_PATHS), value=json_values, delete=st.booleans())
def test_manifest_field_values(fuzz_store: Path, tmp_path: Path, path, value, delete: bool):
    manifest = json.loads((fuzz_store / "manifest.json").read_text())
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    copy = tmp_path / "store"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(fuzz_store, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))

    load_store_or_documented_error(copy, verify=True)
    load_store_or_documented_error(copy, verify=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"index_type": "ivf"}, "index_type"),
        ({"index_type": "hnsw"}, "index_type"),
        ({"index_type": "annoy"}, "index_type"),
        ({"files": {"index.faiss": [1, 2], "chunks.jsonl": {}}}, "files"),
        ({"files": {"../outside": {"bytes": 1, "sha256": "0"}}}, "outside"),
    ],
)
def test_manifest_inconsistent_fields_raise(fuzz_store: Path, tmp_path: Path, changes, message):
    copy = tmp_path / "store"
    shutil.copytree(fuzz_store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    files = changes.pop("files", None)
    manifest.update(changes)
    manifest["files"] = describe_files(copy) if files is None else {**manifest["files"], **files}
    (copy / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(CorruptStoreError, match=message):
        DocumentStore.load(copy)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=300))
def test_random_manifest_bytes(fuzz_store: Path, tmp_path: Path, data: bytes):
    copy = tmp_path / "store"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(fuzz_store, copy)
    (copy / "manifest.json").write_bytes(data)

    with pytest.raises(STORE_ERRORS):
        DocumentStore.load(copy)
