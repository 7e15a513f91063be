"""The ``manifest.json`` of a document store: settings, version and file checksums.

The manifest is written last, after the files that it lists, and records each file's size
and SHA-256 so that ``DocumentStore.load`` detects missing, truncated and altered files.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "CorruptStoreError",
    "EmbedderMismatchError",
    "StoreVersionError",
    "describe_files",
    "read_manifest",
    "reader_rag_version",
    "verify_files",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
HASH_BLOCK_BYTES = 1 << 20

# Manifest fields and the JSON types that each may have.
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "reader_rag_version": (str,),
    "embedder": (str,),
    "dimension": (int,),
    "normalize": (bool,),
    "chunk_tokens": (int,),
    "overlap_tokens": (int,),
    "chunk_tokenizer": (str,),
    "index_type": (str,),
    "index_params": (dict,),
    "num_chunks": (int,),
    "datastore_tokenizer": (str, type(None)),
    "datastore_vocab_size": (int, type(None)),
    "files": (dict,),
}


class CorruptStoreError(ValueError):
    """A store folder with a missing, truncated, altered or inconsistent file."""


class StoreVersionError(ValueError):
    """A store written by a newer reader_rag, in a format version this code cannot read."""


class EmbedderMismatchError(ValueError):
    """An embedder that differs from the store's in name or embedding dimension."""


def reader_rag_version() -> str:
    """Return the installed reader-rag version, or ``0+unknown`` when it is not installed."""
    try:
        return importlib.metadata.version("reader-rag")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def read_manifest(store_path: Path) -> dict[str, Any]:
    """Read ``manifest.json`` from ``store_path`` and check its fields and format version.

    Raises:
        CorruptStoreError: the manifest is missing, not valid JSON, or has a missing or
            mistyped field.
        StoreVersionError: the format version is newer than ``FORMAT_VERSION``.
    """
    path = store_path / MANIFEST_FILE
    if not path.is_file():
        raise CorruptStoreError(
            f"store {str(store_path)!r} has no {MANIFEST_FILE}, so it is not a reader_rag store "
            "or its first build did not finish; rebuild it with DocumentStore.build"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise CorruptStoreError(
            f"{str(path)!r} is not valid JSON ({error}); rebuild the store with "
            "DocumentStore.build"
        ) from None
    if not isinstance(manifest, dict):
        raise CorruptStoreError(
            f"{str(path)!r} is a JSON {type(manifest).__name__}, not an object; rebuild the store"
        )

    check_format_version(path, manifest)
    for name, types in MANIFEST_FIELDS.items():
        value = manifest.get(name)
        if name not in manifest or not is_instance_strict(value, types):
            raise CorruptStoreError(
                f"{str(path)!r} has an invalid or missing field {name!r} (got {value!r}); "
                "rebuild the store with DocumentStore.build"
            )
    return manifest


def check_format_version(path: Path, manifest: dict[str, Any]) -> None:
    """Raise unless the manifest's format version is an int no newer than ``FORMAT_VERSION``."""
    version = manifest.get("format_version")
    if not is_instance_strict(version, (int,)):
        raise CorruptStoreError(
            f"{str(path)!r} has no integer format_version (got {version!r}); rebuild the store"
        )
    if version > FORMAT_VERSION:
        raise StoreVersionError(
            f"store {str(path.parent)!r} has format version {version}, written by reader_rag "
            f"{manifest.get('reader_rag_version', 'unknown')}, but reader_rag "
            f"{reader_rag_version()} reads up to version {FORMAT_VERSION}; upgrade reader_rag "
            "or rebuild the store"
        )


def is_instance_strict(value: Any, types: tuple[type, ...]) -> bool:
    """Like isinstance, but a bool does not count as an int."""
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def describe_files(store_path: Path) -> dict[str, dict[str, Any]]:
    """Return the size in bytes and SHA-256 of every file below ``store_path``, keyed by POSIX path.

    The manifest itself is left out.
    """
    files = {}
    for path in sorted(p for p in store_path.rglob("*") if p.is_file()):
        relative = path.relative_to(store_path).as_posix()
        if relative == MANIFEST_FILE:
            continue
        files[relative] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return files


def verify_files(store_path: Path, files: dict[str, Any], check_hashes: bool) -> None:
    """Check that each listed file exists and has its recorded size and, optionally, SHA-256.

    Raises:
        CorruptStoreError: a file is missing, has another size, or has another hash.
    """
    fix = "rebuild the store with DocumentStore.build"
    for relative, expected in files.items():
        check_file_entry(store_path, relative, expected)
        path = store_path / relative
        if not path.is_file():
            raise CorruptStoreError(f"store file {str(path)!r} is missing; {fix}")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise CorruptStoreError(
                f"store file {str(path)!r} has {size} bytes but the manifest records "
                f"{expected.get('bytes')}, so it is truncated or was changed; {fix}"
            )
        if check_hashes and file_sha256(path) != expected.get("sha256"):
            raise CorruptStoreError(
                f"store file {str(path)!r} does not match its SHA-256 in the manifest, so it "
                f"was changed or damaged; {fix}"
            )


def check_file_entry(store_path: Path, relative: str, expected: Any) -> None:
    """Raise CorruptStoreError unless one ``files`` entry names a path inside the store and
    records an integer size and a SHA-256 string."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise CorruptStoreError(
            f"{str(store_path / MANIFEST_FILE)!r} lists the file {relative!r}, which is outside "
            "the store folder; rebuild the store with DocumentStore.build"
        )
    if not (
        isinstance(expected, dict)
        and is_instance_strict(expected.get("bytes"), (int,))
        and isinstance(expected.get("sha256"), str)
    ):
        raise CorruptStoreError(
            f"{str(store_path / MANIFEST_FILE)!r} has an invalid entry for {relative!r} in "
            f"files (got {expected!r:.200}); each entry needs an integer 'bytes' and a "
            "'sha256' string, so rebuild the store with DocumentStore.build"
        )


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
