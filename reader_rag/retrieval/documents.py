"""Load documents from text files, folders of text files and JSONL files.

Every file is read as UTF-8. A leading byte order mark is dropped. Documents whose text is
empty or only whitespace are skipped, and one warning lists them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Document", "load_documents"]

logger = logging.getLogger(__name__)

JSONL_SUFFIX = ".jsonl"
# Optional JSONL fields copied into Document.metadata.
JSONL_METADATA_FIELDS = ("id", "source", "title")
# A file whose first bytes contain a NUL byte is treated as binary, as git and grep do.
BINARY_SNIFF_BYTES = 8192
# Maximum number of skipped sources listed in the warning about empty documents.
MAX_LISTED_EMPTY = 20


@dataclass(frozen=True)
class Document:
    """A document's text and where it came from.

    ``source`` is the file path for a text file. For a JSONL row it is the row's ``id`` when
    present, else ``path#line`` with a 1-based line number. ``metadata`` contains the JSONL row's
    ``id``, ``source`` and ``title`` fields when present, and is empty for text files.
    """

    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


def load_documents(paths: Sequence[str | os.PathLike[str]]) -> list[Document]:
    """Load the documents in ``paths``, in the order given.

    Each path is one of:

    - a ``.jsonl`` file: one document per row, from the row's ``text`` field. Blank lines
      are skipped.
    - a folder: every file below it, recursively, sorted by relative path. Hidden files and
      folders (name starting with ``.``) are skipped, and so are binary files (a NUL byte in
      the first 8 KiB), with one warning. ``.jsonl`` files in the folder are read as JSONL.
    - any other file: read whole as one UTF-8 text document.

    Raises:
        TypeError: ``paths`` is a single string or path instead of a sequence.
        FileNotFoundError: a path does not exist.
        ValueError: a folder contains no files or only binary ones, or a file given directly
            is binary. Also raised when a file is not valid UTF-8, and the message then names
            the byte offset. A JSONL row that is not a JSON object with a string ``text``
            field raises it too, naming the line number, and so does a row that nests too
            deeply to parse or contains a lone surrogate escape.
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(
            f"load_documents expects a sequence of paths, got the single path {paths!r}; "
            f"wrap it in a list: load_documents([{str(paths)!r}])"
        )

    documents: list[Document] = []
    for path in map(Path, paths):
        documents.extend(load_path(path))
    return drop_empty_documents(documents)


def load_path(path: Path) -> list[Document]:
    """Load the documents of one file or folder, including empty ones."""
    if not path.exists():
        raise FileNotFoundError(
            f"document path {str(path)!r} does not exist; pass an existing file or folder"
        )
    if path.is_dir():
        return load_folder(path)
    return load_file(path)


def load_file(path: Path) -> list[Document]:
    """Load one file given directly: JSONL rows or one text document."""
    if path.suffix.lower() == JSONL_SUFFIX:
        return load_jsonl(path)
    return [Document(text=read_utf8(path), source=str(path))]


def load_folder(folder: Path) -> list[Document]:
    """Load every visible text file below ``folder``, sorted by relative path."""
    files = list(walk_visible_files(folder))
    if not files:
        raise ValueError(
            f"folder {str(folder)!r} contains no files (hidden files are skipped); "
            "add .txt, .md or .jsonl files or pass another path"
        )

    documents: list[Document] = []
    binary_files: list[Path] = []
    for path in files:
        if is_binary(path):
            binary_files.append(path)
            continue
        documents.extend(load_file(path))

    if binary_files:
        logger.warning(
            "skipped %d binary file(s) in %s: %s",
            len(binary_files),
            folder,
            ", ".join(str(p.relative_to(folder)) for p in binary_files),
        )
    if len(binary_files) == len(files):
        raise ValueError(
            f"folder {str(folder)!r} contains only binary files ({len(files)} found); "
            "add UTF-8 text files or pass another path"
        )
    return documents


def walk_visible_files(folder: Path) -> Iterator[Path]:
    """Yield the files below ``folder`` whose path has no hidden part, sorted by relative path.

    Symbolic links to folders are not followed, which also rules out link cycles.
    """
    found: list[Path] = []
    for root, dirnames, filenames in os.walk(folder):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        for name in filenames:
            path = Path(root, name)
            if not name.startswith(".") and path.is_file():
                found.append(path)
    yield from sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def is_binary(path: Path) -> bool:
    """Return True when the first 8 KiB of ``path`` contain a NUL byte."""
    with path.open("rb") as file:
        return b"\x00" in file.read(BINARY_SNIFF_BYTES)


def read_utf8(path: Path) -> str:
    """Read ``path`` as UTF-8 text, dropping a leading byte order mark.

    Raises:
        ValueError: the file contains a NUL byte or is not valid UTF-8. The message names
            the file and the byte offset of the first bad byte.
    """
    data = path.read_bytes()
    nul_offset = data.find(b"\x00")
    if nul_offset != -1:
        raise ValueError(
            f"{str(path)!r} looks binary (NUL byte at byte offset {nul_offset}); "
            "pass UTF-8 text files only"
        )
    return decode_utf8(data, path).removeprefix("\ufeff")


def decode_utf8(data: bytes, path: Path, base_offset: int = 0) -> str:
    """Decode ``data`` as UTF-8. ``base_offset`` is the byte offset of ``data`` in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = base_offset + error.start
        raise ValueError(
            f"{str(path)!r} is not valid UTF-8: byte 0x{data[error.start]:02x} at byte offset "
            f"{offset} ({error.reason}); convert the file to UTF-8, for example with "
            f"`iconv -f latin1 -t utf-8`"
        ) from None


def load_jsonl(path: Path) -> list[Document]:
    """Load one document per non-blank line of a JSONL file."""
    data = path.read_bytes()
    documents: list[Document] = []
    offset = 0
    for line_number, raw_line in enumerate(data.splitlines(keepends=True), start=1):
        line = decode_utf8(raw_line, path, base_offset=offset)
        if line_number == 1:
            line = line.removeprefix("\ufeff")
        offset += len(raw_line)
        if line.strip():
            documents.append(parse_jsonl_row(line, path, line_number))
    return documents


def parse_jsonl_row(line: str, path: Path, line_number: int) -> Document:
    """Parse one JSONL line into a Document."""
    location = f"{str(path)!r} line {line_number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{location} is not valid JSON ({error.msg} at column {error.colno}); "
            "each line must be one JSON object such as {\"text\": \"...\"}"
        ) from None
    except RecursionError:
        raise ValueError(
            f"{location} nests JSON arrays or objects too deeply to parse; "
            "each line must be one JSON object such as {\"text\": \"...\"}"
        ) from None
    if not isinstance(row, dict):
        raise ValueError(
            f"{location} is a JSON {type(row).__name__}, not an object; "
            "each line must be one JSON object such as {\"text\": \"...\"}"
        )
    if "text" not in row:
        raise ValueError(
            f"{location} has no \"text\" field (fields found: {sorted(row)}); "
            "add the document text as \"text\""
        )
    text = row["text"]
    if not isinstance(text, str):
        raise ValueError(
            f"{location} has a \"text\" field of type {type(text).__name__}; "
            "it must be a string"
        )
    # json.loads accepts an unpaired surrogate escape such as "\\ud800", but such a string is
    # not valid Unicode: tokenizers and the UTF-8 chunk file of a store cannot encode it.
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{location} contains a lone surrogate escape such as \"\\ud800\", which is not "
            "valid Unicode text; write each character outside the Basic Multilingual Plane as "
            "a pair of \\uXXXX escapes or as UTF-8"
        ) from None

    metadata = {name: row[name] for name in JSONL_METADATA_FIELDS if name in row}
    if row.get("id") is not None:
        source = str(row["id"])
    else:
        source = f"{path}#{line_number}"
    return Document(text=text, source=source, metadata=metadata)


def drop_empty_documents(documents: list[Document]) -> list[Document]:
    """Return the documents with non-whitespace text, logging one warning for the rest."""
    kept = [document for document in documents if document.text.strip()]
    empty_sources = [document.source for document in documents if not document.text.strip()]
    if empty_sources:
        listed = ", ".join(empty_sources[:MAX_LISTED_EMPTY])
        more = len(empty_sources) - MAX_LISTED_EMPTY
        if more > 0:
            listed += f" and {more} more"
        logger.warning(
            "skipped %d empty or whitespace-only document(s): %s", len(empty_sources), listed
        )
    return kept
