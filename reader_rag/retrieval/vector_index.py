"""FAISS indexes over chunk embeddings, scored by inner product.

Three index types: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (``IndexIVFFlat``, trained with
k-means, approximate) and ``hnsw`` (``IndexHNSWFlat``, a graph, approximate). Vector ids are
the positions of the chunks in the store, in insertion order.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss
import numpy as np

__all__ = [
    "INDEX_TYPES",
    "MIN_IVF_VECTORS",
    "apply_search_params",
    "create_index",
    "index_params",
    "to_search_device",
]

logger = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivf", "hnsw")

# FAISS k-means warns below 39 training points per centroid, so nlist is at most n // 39.
IVF_POINTS_PER_CENTROID = 39
IVF_MIN_NLIST = 4
MIN_IVF_VECTORS = IVF_POINTS_PER_CENTROID * IVF_MIN_NLIST
# Neighbors per HNSW node, and the candidate list sizes while building and searching.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


def index_params(index_type: str, num_vectors: int) -> dict[str, Any]:
    """Return the parameters of a new index of ``index_type`` for ``num_vectors`` vectors.

    For ``ivf``, ``nlist`` is about 4 * sqrt(n), capped at n // 39, and ``nprobe`` is
    ``max(8, nlist // 16)`` capped at ``nlist``, so small indexes are searched exhaustively.

    Raises:
        ValueError: ``index_type`` is unknown, or ``ivf`` gets fewer than ``MIN_IVF_VECTORS``.
    """
    if index_type == "flat":
        return {}
    if index_type == "hnsw":
        return {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH}
    if index_type == "ivf":
        if num_vectors < MIN_IVF_VECTORS:
            raise ValueError(
                f"index_type='ivf' needs at least {MIN_IVF_VECTORS} chunks to train "
                f"{IVF_MIN_NLIST} clusters of {IVF_POINTS_PER_CENTROID} vectors, but got "
                f"{num_vectors}; use index_type='flat', which is exact and fast at this size"
            )
        nlist = max(IVF_MIN_NLIST, min(round(4 * math.sqrt(num_vectors)), num_vectors // 39))
        nprobe = min(nlist, max(8, nlist // 16))
        return {"nlist": nlist, "nprobe": nprobe}
    raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}")


def create_index(vectors: np.ndarray, index_type: str, params: dict[str, Any]) -> faiss.Index:
    """Create a CPU index of ``index_type``, train it if needed, and add ``vectors``.

    ``vectors`` is a float32 array of shape ``(n, dimension)``.
    """
    dimension = int(vectors.shape[1])
    if index_type == "flat":
        index = faiss.IndexFlatIP(dimension)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    elif index_type == "ivf":
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFFlat(
            quantizer, dimension, params["nlist"], faiss.METRIC_INNER_PRODUCT
        )
        logger.info("training IVF index: %d clusters on %d vectors", params["nlist"], len(vectors))
        index.train(vectors)
    else:
        raise ValueError(
            f"index_type must be one of {', '.join(INDEX_TYPES)}, got {index_type!r}"
        )
    apply_search_params(index, index_type, params)
    if len(vectors):
        index.add(vectors)
    return index


def apply_search_params(index: faiss.Index, index_type: str, params: dict[str, Any]) -> None:
    """Set the search-time parameters (IVF ``nprobe``, HNSW ``efSearch``) on a CPU index."""
    if index_type == "ivf":
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]
    elif index_type == "hnsw":
        index.hnsw.efSearch = params["ef_search"]


def to_search_device(index: faiss.Index, index_type: str) -> faiss.Index:
    """Return a GPU copy of ``index`` for searching when FAISS detects a GPU, else ``index`` itself.

    HNSW indexes stay on the CPU because FAISS has no GPU HNSW. Writes and ``add`` always use
    the CPU index.
    """
    # NOTE: the GPU branch has not been run, because it needs faiss-gpu and the tests use
    # faiss-cpu.
    if index_type == "hnsw" or faiss.get_num_gpus() == 0:
        return index
    logger.info("copying the %s index to %d GPU(s)", index_type, faiss.get_num_gpus())
    return faiss.index_cpu_to_all_gpus(index)
