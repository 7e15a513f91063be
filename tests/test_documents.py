"""Tests for reader_rag.retrieval.documents."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from reader_rag.retrieval.documents import Document, load_documents

LOGGER_NAME = "reader_rag.retrieval.documents"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# Successful loading


def test_text_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Forests cover 30 percent of land.\nSecond line.", encoding="utf-8")

    documents = load_documents([path])

    assert documents == [
        Document("Forests cover 30 percent of land.\nSecond line.", str(path), {})
    ]


def test_any_suffix_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_text("no suffix at all", encoding="utf-8")

    assert load_documents([str(path)])[0].text == "no suffix at all"


def test_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.md"
    path.write_bytes(b"\xef\xbb\xbf# Title")

    assert load_documents([path])[0].text == "# Title"


def test_folder_is_recursive_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("b/z", encoding="utf-8")
    (tmp_path / "a.md").write_text("a", encoding="utf-8")
    (tmp_path / "c.txt").write_text("c", encoding="utf-8")
    (tmp_path / "b" / "a.txt").write_text("b/a", encoding="utf-8")

    documents = load_documents([tmp_path])

    assert [document.text for document in documents] == ["a", "b/a", "b/z", "c"]
    assert documents[1].source == str(tmp_path / "b" / "a.txt")


def test_folder_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / ".hidden.txt").write_text("hidden file", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("hidden folder", encoding="utf-8")
    (tmp_path / "visible.txt").write_text("visible", encoding="utf-8")

    documents = load_documents([tmp_path])

    assert [document.text for document in documents] == ["visible"]


def test_folder_skips_binary_files_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "text.txt").write_text("kept", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        documents = load_documents([tmp_path])

    assert [document.text for document in documents] == ["kept"]
    assert len(caplog.records) == 1
    assert "image.png" in caplog.records[0].getMessage()


def test_folder_reads_jsonl_files_as_rows(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "rows.jsonl", [{"text": "row one"}, {"text": "row two"}])

    documents = load_documents([tmp_path])

    assert [document.text for document in documents] == ["row one", "row two"]


def test_jsonl_metadata_and_sources(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": 7, "title": "Forest", "source": "wiki", "text": "Forests are large.", "x": 1},
            {"text": "No id here."},
        ],
    )

    documents = load_documents([path])

    assert documents[0] == Document(
        "Forests are large.", "7", {"id": 7, "source": "wiki", "title": "Forest"}
    )
    assert documents[1] == Document("No id here.", f"{path}#2", {})


def test_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n', encoding="utf-8")

    documents = load_documents([path])

    assert [document.text for document in documents] == ["a", "b"]
    assert documents[1].source == f"{path}#4"


def test_paths_keep_given_order(tmp_path: Path) -> None:
    first = tmp_path / "z.txt"
    second = tmp_path / "a.txt"
    first.write_text("z", encoding="utf-8")
    second.write_text("a", encoding="utf-8")

    assert [document.text for document in load_documents([first, second])] == ["z", "a"]


def test_spec_bench_passages_round_trip(tmp_path: Path, rag_prompts) -> None:
    passages = [passage for prompt in rag_prompts[:5] for passage in prompt.passages]
    path = write_jsonl(
        tmp_path / "passages.jsonl",
        [{"id": f"p{i}", "text": passage} for i, passage in enumerate(passages)],
    )

    documents = load_documents([path])

    assert [document.text for document in documents] == passages
    assert documents[3].source == "p3"


# Empty documents


def test_empty_documents_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "spaces.txt").write_text("  \n\t ", encoding="utf-8")
    (tmp_path / "full.txt").write_text("content", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        documents = load_documents([tmp_path])

    assert [document.text for document in documents] == ["content"]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "empty.txt" in message
    assert "spaces.txt" in message


def test_all_empty_input_gives_empty_list(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "empty.jsonl", [{"text": ""}, {"text": " "}])

    assert load_documents([path]) == []


def test_no_paths_gives_empty_list() -> None:
    assert load_documents([]) == []


# Errors


def test_missing_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"

    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_documents([missing])


def test_single_path_not_in_list_raises(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        load_documents(str(tmp_path))


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contains no files"):
        load_documents([tmp_path])


def test_folder_with_only_hidden_files_raises(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SECRET=1", encoding="utf-8")

    with pytest.raises(ValueError, match="contains no files"):
        load_documents([tmp_path])


def test_folder_with_only_binary_files_raises(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")

    with pytest.raises(ValueError, match="only binary files"):
        load_documents([tmp_path])


def test_binary_file_raises_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"text\x00more")

    with pytest.raises(ValueError, match=r"data\.txt.*NUL byte at byte offset 4"):
        load_documents([path])


def test_non_utf8_file_raises_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait".encode("latin-1"))

    with pytest.raises(ValueError, match=r"latin1\.txt.*not valid UTF-8.*0xe9 at byte offset 3"):
        load_documents([path])


def test_non_utf8_file_in_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")

    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset 0"):
        load_documents([tmp_path])


def test_non_utf8_jsonl_offset_counts_earlier_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    first_line = b'{"text": "ok"}\n'
    path.write_bytes(first_line + b'{"text": "caf\xe9"}\n')

    expected_offset = len(first_line) + len(b'{"text": "caf')
    with pytest.raises(ValueError, match=f"byte offset {expected_offset}"):
        load_documents([path])


def test_jsonl_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")

    with pytest.raises(ValueError, match=r"rows\.jsonl' line 2 is not valid JSON"):
        load_documents([path])


def test_jsonl_missing_text_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "ok"}, {"body": "wrong field"}])

    with pytest.raises(ValueError, match=r"line 2 has no \"text\" field.*body"):
        load_documents([path])


def test_jsonl_row_not_object_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [["a", "list"]])

    with pytest.raises(ValueError, match=r"line 1 is a JSON list, not an object"):
        load_documents([path])


def test_jsonl_text_not_string_names_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": None}])

    with pytest.raises(ValueError, match=r"line 1 has a \"text\" field of type NoneType"):
        load_documents([path])
