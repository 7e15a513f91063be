"""Lossless speculative decoding for retrieval-augmented generation.

The retrieved documents, the prompt and the output so far are indexed per request; at every
step the index drafts a tree of likely continuations and the target model verifies the whole
tree in one forward pass. Output equals plain decoding of the same model.
"""

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.generation import GenerationResult, GenerationStats, GenerationStream, ReaderGenerator
from reader_rag.models import DEFAULT_MODEL, load_model

__all__ = [
    "DEFAULT_MODEL",
    "DraftConfig",
    "GenerationConfig",
    "GenerationResult",
    "GenerationStats",
    "GenerationStream",
    "ReaderGenerator",
    "load_model",
]

__version__ = "0.1.0"
