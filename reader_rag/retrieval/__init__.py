"""Document loading, chunking, embedding and the on-disk document store.

Names are imported on first access, so that ``import reader_rag.retrieval.documents`` does not
load torch, sentence-transformers or FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Chunk",
    "CorruptStoreError",
    "Document",
    "DocumentStore",
    "Embedder",
    "EmbedderMismatchError",
    "SearchResult",
    "StoreVersionError",
    "chunk_documents",
    "load_documents",
    "load_embedder",
]

_MODULE_OF_NAME = {
    "Chunk": "reader_rag.retrieval.chunking",
    "chunk_documents": "reader_rag.retrieval.chunking",
    "Document": "reader_rag.retrieval.documents",
    "load_documents": "reader_rag.retrieval.documents",
    "Embedder": "reader_rag.retrieval.embeddings",
    "load_embedder": "reader_rag.retrieval.embeddings",
    "CorruptStoreError": "reader_rag.retrieval.store",
    "DocumentStore": "reader_rag.retrieval.store",
    "EmbedderMismatchError": "reader_rag.retrieval.store",
    "SearchResult": "reader_rag.retrieval.store",
    "StoreVersionError": "reader_rag.retrieval.store",
}


def __getattr__(name: str) -> Any:
    module_name = _MODULE_OF_NAME.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
