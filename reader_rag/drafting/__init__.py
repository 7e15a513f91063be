"""Draft trees, draft sources, the best-first tree builder and the forward cost model."""

from reader_rag.drafting.builder import build_draft_tree, choose_tree_size
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.cost_model import AdaptiveCostModel, CostModel
from reader_rag.drafting.history import ResponseHistory
from reader_rag.drafting.recycling import RecyclingTable, prompt_rows
from reader_rag.drafting.sources import (
    Candidate,
    CorpusSource,
    DraftSource,
    HistorySource,
    RequestIndexSource,
)
from reader_rag.drafting.tree import DraftTree

__all__ = [
    "AcceptanceCalibrator",
    "AdaptiveCostModel",
    "Candidate",
    "CorpusSource",
    "CostModel",
    "DraftSource",
    "DraftTree",
    "HistorySource",
    "RecyclingTable",
    "RequestIndexSource",
    "ResponseHistory",
    "build_draft_tree",
    "choose_tree_size",
    "prompt_rows",
]
