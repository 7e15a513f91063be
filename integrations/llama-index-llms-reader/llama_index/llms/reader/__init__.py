"""LlamaIndex LLM integration of reader_rag: lossless speculative decoding for RAG."""

from llama_index.llms.reader.base import DraftDocument, ReaderLLM, drafting_from

__all__ = ["DraftDocument", "ReaderLLM", "drafting_from"]
