"""LangChain LLM integration of reader_rag: lossless speculative decoding for RAG."""

from langchain_reader.llms import ReaderLLM

__all__ = ["ReaderLLM"]
