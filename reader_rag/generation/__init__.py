"""The decoding loop, its results and streaming."""

from reader_rag.generation.generator import Prompt, ReaderGenerator
from reader_rag.generation.results import GenerationResult, GenerationStats, GenerationStream
from reader_rag.generation.threads import iterate_in_thread

__all__ = [
    "GenerationResult",
    "GenerationStats",
    "GenerationStream",
    "Prompt",
    "ReaderGenerator",
    "iterate_in_thread",
]
