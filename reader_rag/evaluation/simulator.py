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

import numpy as np
import torch
from tqdm.auto import tqdm

from reader_rag.atomic_dir import atomic_file
from reader_rag.config import DraftConfig
from reader_rag.drafting.builder import build_draft_tree
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.history import ResponseHistory
from reader_rag.drafting.recycling import RecyclingTable
from reader_rag.drafting.sources import HistorySource, RequestIndexSource
from reader_rag.evaluation.datasets import BenchmarkPrompt
from reader_rag.generation.generator import ReaderGenerator
from reader_rag.index.request_index import RequestIndex
from reader_rag.models import FinalHiddenStates
from reader_rag.verify.accept import walk_tree

__all__ = [
    "REPLAY_VARIANTS",
    "Recording",
    "ReplayResult",
    "format_replay_summary",
    "load_recordings",
    "record_greedy",
    "replay",
    "replay_report",
    "save_recordings",
]

logger = logging.getLogger(__name__)


@dataclass
class Recording:
    """The inputs and plain greedy output of one request.

    ``top_ids[p]`` and ``top_probabilities[p]``, when recorded, are the target's top-k next
    tokens and their probabilities (softmax over the top-k logits) at the position that produced
    ``output_ids[p]``. They feed the recycling table during replay. ``seed_keys``,
    ``seed_ids`` and ``seed_probabilities``, when recorded, are the rows that the generator's
    prefill stores for the prompt (see :func:`~reader_rag.drafting.recycling.prompt_rows`).
    """

    prompt_ids: list[int]
    document_ids: list[list[int]]
    output_ids: list[int]
    top_ids: list[list[int]] | None = None
    top_probabilities: list[list[float]] | None = None
    seed_keys: list[int] | None = None
    seed_ids: list[list[int]] | None = None
    seed_probabilities: list[list[float]] | None = None


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
    recycling: bool = False,
    history: bool = False,
    vocab_size: int = 1 << 17,
) -> ReplayResult:
    """Replay the drafter over ``recordings`` as greedy decoding would run it.

    The first output token comes from the prefill and counts as one step of cost 1, as in
    the generator. Each later step drafts a tree, accepts the longest path that agrees with the
    recorded output, and emits it plus one bonus token.

    With ``recycling``, a recycling table learns from the recorded top-k of each position once
    the step that computed it is over: the rows of the root and of the accepted path. Rows of
    rejected nodes were never recorded, so the table learns from fewer rows than in the
    generator. A recording's prompt rows, when it has them and ``draft.prompt_seed_tokens`` is
    not 0, enter the table before its first step, as the generator's prefill stores them. The
    rows were scored with the recording generator's bound, whatever nonzero bound ``draft``
    sets. With ``history``, each recording's output joins a response history after its
    replay, so later recordings draft from earlier outputs, as requests served one after
    another would.
    """
    calibrator = calibrator or AcceptanceCalibrator()
    recycling = recycling and draft.recycle_width > 0
    history = history and draft.history_tokens > 0
    table = RecyclingTable(vocab_size, max(8, draft.recycle_width)) if recycling else None
    responses = ResponseHistory(vocab_size, draft.history_tokens) if history else None
    result = ReplayResult()
    for recording in recordings:
        index = RequestIndex(key_length=4, max_occurrences=draft.max_occurrences)
        for ids in recording.document_ids:
            index.add_document(ids)
        index.extend(recording.prompt_ids)
        source = RequestIndexSource(
            index, draft.min_match_length, draft.max_match_length, draft.max_occurrences
        )
        sources: list = [source]
        if responses is not None:
            sources.append(HistorySource(responses, source, max_occurrences=draft.max_occurrences))
        learn = table is not None and recording.top_ids is not None
        output = recording.output_ids
        if learn:
            if draft.prompt_seed_tokens and recording.seed_keys is not None:
                table.update_rows(
                    np.asarray(recording.seed_keys),
                    np.asarray(recording.seed_ids, dtype=np.int32),
                    np.asarray(recording.seed_probabilities, dtype=np.float32),
                )
            _learn(table, recording, recording.prompt_ids[-1:], 0)
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
                    [s.propose(max_depth) for s in sources],
                    calibrator,
                    max_nodes,
                    max_depth,
                    draft.probability_floor,
                    cost,
                    recycling=table,
                    root_token=output[position - 1],
                    recycle_width=draft.recycle_width,
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
            if learn:
                _learn(table, recording, output[position - 1 : position + len(path)], position)
            index.extend(emitted)
            position += len(emitted)
            result.tokens += len(emitted)
            result.steps += 1
            result.drafted_nodes += size
            result.cost += step_cost(size + 1)
        if responses is not None:
            responses.record(output)
    return result


def _learn(table: RecyclingTable, recording: Recording, keys: Sequence[int], first: int) -> None:
    """Store the recorded top-k of output positions ``first, first + 1, ...`` under ``keys``."""
    rows = range(first, first + len(keys))
    table.update_rows(
        np.asarray(keys),
        np.asarray([recording.top_ids[p] for p in rows], dtype=np.int32),
        np.asarray([recording.top_probabilities[p] for p in rows], dtype=np.float32),
    )


def record_greedy(
    generator: ReaderGenerator,
    prompts: Sequence[BenchmarkPrompt],
    max_new_tokens: int,
    top_k: int = 8,
    progress: bool = True,
) -> list[Recording]:
    """Decode each prompt greedily with Hugging Face ``generate`` and record the output with
    the top-k of every position, and the prompt rows that the generator's prefill stores."""
    recordings = []
    seed = generator.draft.prompt_seed_tokens > 0
    for prompt in tqdm(prompts, desc="recording", unit="prompt", disable=not progress):
        prompt_ids = generator.encode_prompt([{"role": "user", "content": prompt.prompt}])
        input_ids = torch.tensor([prompt_ids], device=generator.device)
        with torch.inference_mode():
            with FinalHiddenStates(generator.model, seed) as final:
                generator.model(input_ids=input_ids, logits_to_keep=1)
            rows = None
            if final.hidden is not None:
                rows = generator.prompt_seed_rows(prompt_ids, final.hidden[0])
            seeds = [part.tolist() for part in rows] if rows is not None else [None, None, None]
            output = generator.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        logits = torch.cat(output.logits).float()
        values, indices = logits.topk(top_k, dim=-1)
        recordings.append(
            Recording(
                prompt_ids=prompt_ids,
                document_ids=generator.encode_documents(list(prompt.passages)),
                output_ids=output.sequences[0, len(prompt_ids) :].tolist(),
                top_ids=indices.tolist(),
                top_probabilities=torch.softmax(values, dim=-1).tolist(),
                seed_keys=seeds[0],
                seed_ids=seeds[1],
                seed_probabilities=seeds[2],
            )
        )
    return recordings


def save_recordings(recordings: Sequence[Recording], path: str | Path) -> None:
    """Write recordings as JSON lines, replacing ``path`` atomically.

    A process killed during the write leaves ``path`` as it was before, and the next save
    removes the partial copy.
    """
    with atomic_file(path) as handle:
        for recording in recordings:
            handle.write(json.dumps(recording.__dict__) + "\n")


def load_recordings(path: str | Path) -> list[Recording]:
    """Read recordings written by :func:`save_recordings`.

    Raises:
        ValueError: the file contains no recordings, or a line is not a valid recording. The
            message names the file and the line.
    """
    recordings = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                recordings.append(_parse_recording(json.loads(line)))
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"{path}, line {number}: not a valid recording ({error}); delete the file "
                    "to record it again"
                ) from error
    if not recordings:
        raise ValueError(f"{path} contains no recordings; delete it to record them again")
    return recordings


_MAX_TOKEN_ID = 2**31
"""Token ids in recordings are stored as int32 during replay."""


def _parse_recording(row) -> Recording:
    """Check the fields and shapes of one JSON row and return it as a :class:`Recording`."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object")
    unknown = set(row) - {
        "prompt_ids", "document_ids", "output_ids", "top_ids", "top_probabilities",
        "seed_keys", "seed_ids", "seed_probabilities",
    }
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")

    def ids(value, name: str) -> list[int]:
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t < _MAX_TOKEN_ID for t in value
        ):
            raise ValueError(f"{name} must be a list of non-negative integers below 2**31")
        return value

    recording = Recording(
        prompt_ids=ids(row.get("prompt_ids"), "prompt_ids"),
        document_ids=[ids(d, "document_ids") for d in _list(row.get("document_ids"), "document_ids")],
        output_ids=ids(row.get("output_ids"), "output_ids"),
        top_ids=row.get("top_ids"),
        top_probabilities=row.get("top_probabilities"),
        seed_keys=row.get("seed_keys"),
        seed_ids=row.get("seed_ids"),
        seed_probabilities=row.get("seed_probabilities"),
    )
    if not recording.prompt_ids or not recording.output_ids:
        raise ValueError("prompt_ids and output_ids must not be empty")
    if (recording.top_ids is None) != (recording.top_probabilities is None):
        raise ValueError("top_ids and top_probabilities come together")
    if recording.top_ids is not None:
        length = len(recording.output_ids)
        top_ids = [ids(r, "top_ids") for r in _list(recording.top_ids, "top_ids")]
        probabilities = [
            _probabilities(r, "top_probabilities")
            for r in _list(recording.top_probabilities, "top_probabilities")
        ]
        widths = {len(r) for r in top_ids} | {len(r) for r in probabilities}
        if len(top_ids) != length or len(probabilities) != length or len(widths) != 1:
            raise ValueError(
                "top_ids and top_probabilities need one row of equal width per output token"
            )
    seeds = (recording.seed_keys, recording.seed_ids, recording.seed_probabilities)
    if any(part is not None for part in seeds):
        if any(part is None for part in seeds):
            raise ValueError(
                "seed_keys, seed_ids and seed_probabilities come together: give all three or none"
            )
        keys = ids(recording.seed_keys, "seed_keys")
        seed_ids = [ids(r, "seed_ids") for r in _list(recording.seed_ids, "seed_ids")]
        probabilities = [
            _probabilities(r, "seed_probabilities")
            for r in _list(recording.seed_probabilities, "seed_probabilities")
        ]
        widths = {len(r) for r in seed_ids} | {len(r) for r in probabilities}
        if len(seed_ids) != len(keys) or len(probabilities) != len(keys) or len(widths) > 1:
            raise ValueError("seed_ids and seed_probabilities need one row of equal width per key")
    return recording


def _probabilities(value, name: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0 for p in value
    ):
        raise ValueError(f"{name} must contain lists of numbers between 0 and 1")
    return value


def _list(value, name: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list")
    return value


REPLAY_VARIANTS = {
    "suffix": (False, False, False),
    "suffix+recycling": (True, False, True),
    "suffix+history": (False, True, False),
    "all, no prompt rows": (True, True, False),
    "all": (True, True, True),
}
"""Source sets that :func:`replay_report` compares: (token recycling, response history, prompt
rows in the recycling table)."""


def replay_report(
    recordings: Sequence[Recording],
    step_cost: Callable[[int], float],
    node_budgets: Sequence[int | None] = (8, 16, None),
    vocab_size: int = 1 << 17,
) -> dict:
    """Replay every source set of :data:`REPLAY_VARIANTS` at each node budget.

    A budget of ``None`` lets ``step_cost`` size every tree, as the generator does. Each replay
    starts with a fresh calibrator, recycling table and history. Returns a JSON-ready dict with
    one row per budget and source set.
    """
    if not recordings:
        raise ValueError("no recordings to replay")
    total = sum(len(r.output_ids) for r in recordings)
    oracle = {}
    rows = []
    for budget in node_budgets:
        for name, (recycling, history, seeded) in REPLAY_VARIANTS.items():
            config = DraftConfig(
                max_nodes=budget, prompt_seed_tokens=DraftConfig.prompt_seed_tokens if seeded else 0
            )
            result = replay(
                recordings, config, step_cost, recycling=recycling, history=history,
                vocab_size=vocab_size,
            )
            rows.append(
                {
                    "max_nodes": "cost model" if budget is None else budget,
                    "sources": name,
                    "tokens_per_step": result.tokens_per_step,
                    "estimated_speedup": result.estimated_speedup,
                    "accepted_by_source": dict(sorted(result.accepted_by_source.items())),
                }
            )
        oracle[str(budget)] = _oracle_tokens_per_step(recordings, budget, step_cost)
    for row in rows:
        key = "None" if row["max_nodes"] == "cost model" else str(row["max_nodes"])
        row["oracle_share"] = row["tokens_per_step"] / oracle[key]
    return {"recordings": len(recordings), "output_tokens": total, "rows": rows, "oracle": oracle}


def _oracle_tokens_per_step(
    recordings: Sequence[Recording], budget: int | None, step_cost: Callable[[int], float]
) -> float:
    """Tokens per step when every step drafts the true continuation as a chain."""
    from reader_rag.drafting.builder import choose_tree_size

    max_depth = DraftConfig().max_depth
    if budget is None:
        chain = choose_tree_size([1.0] * max_depth, step_cost)
    else:
        chain = min(budget, max_depth)
    tokens = steps = 0
    for recording in recordings:
        position = 0
        while position < len(recording.output_ids):
            if position == 0:
                accepted = 0
            else:
                accepted = max(min(chain, len(recording.output_ids) - position - 1), 0)
            position += accepted + 1
            tokens += accepted + 1
            steps += 1
    return tokens / steps if steps else 0.0


def format_replay_summary(report: dict) -> str:
    """Return the replay report as a Markdown table."""
    lines = [
        f"{report['recordings']} recordings, {report['output_tokens']} output tokens",
        "",
        "| max nodes | sources | tokens/step | share of oracle | estimated speedup | accepted by source |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        accepted = ", ".join(f"{k} {v}" for k, v in row["accepted_by_source"].items())
        lines.append(
            f"| {row['max_nodes']} | {row['sources']} | {row['tokens_per_step']:.2f} "
            f"| {row['oracle_share']:.1%} | {row['estimated_speedup']:.2f} | {accepted} |"
        )
    return "\n".join(lines)
