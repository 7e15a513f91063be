"""Draft trees, draft sources, the best-first tree builder and the forward cost model."""

from reader_rag.drafting.builder import build_draft_tree, choose_tree_size
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.cost_model import CostModel
from reader_rag.drafting.sources import Candidate, DraftSource, RequestIndexSource
from reader_rag.drafting.tree import DraftTree

__all__ = [
    "AcceptanceCalibrator",
    "Candidate",
    "CostModel",
    "DraftSource",
    "DraftTree",
    "RequestIndexSource",
    "build_draft_tree",
    "choose_tree_size",
]
