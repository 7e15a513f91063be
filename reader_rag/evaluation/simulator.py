"""Model-free replay of drafting against recorded greedy outputs.

Under greedy decoding the target's token after an accepted path is the next token of its plain
output, so a recorded output tells exactly which draft nodes verification would accept. Replaying
the drafter over recordings gives tokens per step, and with a cost curve an estimated speedup,
in seconds instead of minutes per configuration. At each step the drafter sees only the documents,
the prompt and the output up to that step, never later tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reader_rag.config import DraftConfig
from reader_rag.drafting.builder import build_draft_tree
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.sources import RequestIndexSource
from reader_rag.index.request_index import RequestIndex
from reader_rag.verify.accept import walk_tree

__all__ = ["Recording", "ReplayResult", "load_recordings", "replay", "save_recordings"]

logger = logging.getLogger(__name__)


@dataclass
class Recording:
    """The inputs and plain greedy output of one request."""

    prompt_ids: list[int]
    document_ids: list[list[int]]
    output_ids: list[int]


@dataclass
class ReplayResult:
    """Totals of one replay over many recordings."""

    tokens: int = 0
    steps: int = 0
    drafted_nodes: int = 0
    cost: float = 0.0
    """Sum over steps of the relative forward cost (plain decoding costs 1 per token)."""
    accepted_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0

    @property
    def estimated_speedup(self) -> float:
        """Tokens per unit of cost, relative to plain decoding; ignores drafting time."""
        return self.tokens / self.cost if self.cost else 0.0


def replay(
    recordings: Sequence[Recording],
    draft: DraftConfig,
    step_cost: Callable[[int], float],
    calibrator: AcceptanceCalibrator | None = None,
) -> ReplayResult:
    """Replay the drafter over ``recordings`` as greedy decoding would run it.

    The first output token comes from the prefill and counts as one step of cost 1, as in
    the generator. Each later step drafts a tree, accepts the longest path that agrees with the
    recorded output, and emits it plus one bonus token.
    """
    calibrator = calibrator or AcceptanceCalibrator()
    result = ReplayResult()
    for recording in recordings:
        index = RequestIndex(key_length=4, max_occurrences=draft.max_occurrences)
        for ids in recording.document_ids:
            index.add_document(ids)
        index.extend(recording.prompt_ids)
        source = RequestIndexSource(
            index, draft.min_match_length, draft.max_match_length, draft.max_occurrences
        )
        output = recording.output_ids
        index.extend(output[:1])
        result.tokens += 1
        result.steps += 1
        result.cost += step_cost(1)
        position = 1
        while position < len(output):
            max_depth = min(draft.max_depth, len(output) - position - 1)
            tree, buckets = ([], [])
            if max_depth >= 1 and draft.max_nodes != 0:
                max_nodes = draft.max_nodes if draft.max_nodes is not None else 63
                cost = step_cost if draft.max_nodes is None else None
                tree, buckets = build_draft_tree(
                    [source.propose(max_depth)],
                    calibrator,
                    max_nodes,
                    max_depth,
                    draft.probability_floor,
                    cost,
                )
            size = len(tree)
            if size:
                children = tree.children()
                path, _ = walk_tree(children, lambda row, path: output[position + len(path)])
                accepted = set(path)
                tested = list(children[0].values())
                for node in path:
                    tested.extend(children[node + 1].values())
                calibrator.update((buckets[n], n in accepted) for n in tested)
                for node in path:
                    name = tree.sources[node]
                    result.accepted_by_source[name] = result.accepted_by_source.get(name, 0) + 1
            else:
                path = []
            emitted = output[position : position + len(path) + 1]
            index.extend(emitted)
            position += len(emitted)
            result.tokens += len(emitted)
            result.steps += 1
            result.drafted_nodes += size
            result.cost += step_cost(size + 1)
    return result


def save_recordings(recordings: Sequence[Recording], path: str | Path) -> None:
    """Write recordings as JSON lines."""
    with open(path, "w", encoding="utf-8") as handle:
        for recording in recordings:
            handle.write(json.dumps(recording.__dict__) + "\n")


def load_recordings(path: str | Path) -> list[Recording]:
    """Read recordings written by :func:`save_recordings`."""
    with open(path, encoding="utf-8") as handle:
        return [Recording(**json.loads(line)) for line in handle if line.strip()]
