"""The batch loop: many requests, each with its own index and tree, in one forward pass per step.

Cache layout. All requests share one KV cache of shape ``(batch, heads, slots, dim)``; every
forward pass appends the same number of slots to every row. A request's committed entries are
the slots marked in ``valid`` ``(batch, slots)``; the slots of rejected draft nodes, of tree
padding and of prompt padding stay in place but are masked out. Attention does not depend on
the order of keys (positions are already rotated into them), so accepted entries are never moved
during a step. When the masked share of the cache passes a threshold, the cache is compacted:
each row's valid slots are gathered to the front. Compaction copies the whole cache, so doing it
only now and then keeps its cost per step small as the batch grows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from reader_rag.drafting.builder import choose_batch_tree_size, truncate_tree
from reader_rag.drafting.cost_model import AdaptiveCostModel
from reader_rag.drafting.tree import DraftTree
from reader_rag.models import FinalHiddenStates
from reader_rag.verify.accept import walk_tree
from reader_rag.verify.cache import new_cache
from reader_rag.verify.mask import ancestor_matrix

__all__ = ["BatchStats", "decode_batch"]

logger = logging.getLogger(__name__)


@dataclass
class BatchStats:
    """Timings of one batch run, in wall-clock seconds."""

    steps: int = 0
    total_time_s: float = 0.0
    compaction_time_s: float = 0.0
    compactions: int = 0
    peak_slots: int = 0
    """Largest cache length reached, in slots per row."""
    peak_capacity: int = 0
    """Largest allocated cache capacity, in slots per row (buffers grow by doubling)."""


@dataclass
class _Rows:
    """Per-row cache bookkeeping, aligned with the cache's batch dimension."""

    requests: list  # the live _Request objects, one per cache row
    valid: torch.Tensor  # (batch, slots) bool: slot holds a committed entry of this row
    positions: torch.Tensor  # (batch, slots) long: position id of the token in each slot


def decode_batch(generator, requests: Sequence, compaction_threshold: float = 0.5) -> BatchStats:
    """Decode ``requests`` (prepared by ``ReaderGenerator._start``) together until all finish.

    Each request keeps its own request index, draft sources, sampling generator and stop
    conditions, so its output equals what it would be decoded alone, up to floating-point
    rounding of batched matrix products. Finished requests leave the batch at once.
    """
    if not 0.0 <= compaction_threshold < 1.0:
        raise ValueError(f"compaction_threshold must be in [0, 1), got {compaction_threshold}")
    stats = BatchStats()
    start = time.perf_counter()
    cache = new_cache()
    with torch.inference_mode():
        rows = _prefill(generator, list(requests), cache)
        rows = _drop_finished(rows, cache, start)
        while rows.requests:
            rows = _step(generator, rows, cache)
            stats.steps += 1
            stats.peak_slots = max(stats.peak_slots, rows.valid.shape[1])
            stats.peak_capacity = max(stats.peak_capacity, _capacity(cache))
            rows = _drop_finished(rows, cache, start)
            if rows.requests and _waste(rows.valid) > compaction_threshold:
                began = time.perf_counter()
                rows = _compact(rows, cache)
                stats.compaction_time_s += time.perf_counter() - began
                stats.compactions += 1
    stats.total_time_s = time.perf_counter() - start
    return stats


def _prefill(generator, requests: list, cache) -> _Rows:
    """Run all prompts left-padded in one forward pass and choose each request's first token."""
    began = time.perf_counter()
    lengths = [len(r.prompt_ids) for r in requests]
    width = max(lengths)
    batch = len(requests)
    input_ids = torch.zeros(batch, width, dtype=torch.long)
    valid = torch.zeros(batch, width, dtype=torch.bool)
    positions = torch.zeros(batch, width, dtype=torch.long)
    for b, (request, length) in enumerate(zip(requests, lengths)):
        input_ids[b, width - length :] = torch.tensor(request.prompt_ids)
        valid[b, width - length :] = True
        positions[b, width - length :] = torch.arange(length)

    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal[None] & valid[:, None, :]  # (batch, query, key)
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding rows attend to themselves
    mask = _masks(generator, allowed, positions, positions)
    recycle = [bool(r.sources and generator.draft.recycle_width) for r in requests]
    seed = any(recycle) and generator.draft.prompt_seed_tokens > 0
    with FinalHiddenStates(generator.model, seed) as final:
        output = generator.model(
            input_ids=input_ids.to(generator.device),
            attention_mask=mask,
            position_ids=positions.to(generator.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    for b, (request, length) in enumerate(zip(requests, lengths)):
        if recycle[b]:
            hidden = final.hidden[b, width - length :] if final.hidden is not None else None
            generator.recycle_prompt(request.prompt_ids, hidden, output.logits[b, -1:])
    elapsed = time.perf_counter() - began
    for b, request in enumerate(requests):
        request.stats.forward_passes += 1
        request.stats.prefill_time_s = elapsed
        token = generator._choose(request, output.logits[b, -1:], 0, [])
        generator._emit(request, [token])
    return _Rows(requests, valid, positions)


def _step(generator, rows: _Rows, cache) -> _Rows:
    step_start = time.perf_counter()
    requests = rows.requests
    batch = len(requests)
    trees: list[DraftTree] = []
    tree_buckets = []
    for request in requests:
        began = time.perf_counter()
        remaining = request.max_new_tokens - len(request.generated)
        max_depth = min(generator.draft.max_depth, remaining - 1)
        tree, buckets = generator._draft(request, max_depth, oracle=False, size_by_cost=False)
        request.stats.draft_time_s += time.perf_counter() - began
        trees.append(tree)
        tree_buckets.append(buckets)

    began = time.perf_counter()
    if generator.draft.max_nodes is None:
        size = choose_batch_tree_size(
            [t.scores for t in trees], generator.batch_step_cost(batch)
        )
    else:
        size = generator.draft.max_nodes
    for tree, buckets in zip(trees, tree_buckets):
        truncate_tree(tree, size)
        del buckets[size:]
    width = 1 + max(len(tree) for tree in trees)

    input_ids = torch.zeros(batch, width, dtype=torch.long)
    query_positions = torch.zeros(batch, width, dtype=torch.long)
    tree_allowed = torch.eye(width, dtype=torch.bool).repeat(batch, 1, 1)  # padding: self only
    for b, (request, tree) in enumerate(zip(requests, trees)):
        size_b = len(tree) + 1
        input_ids[b, :size_b] = torch.tensor([request.generated[-1], *tree.token_ids])
        depths = torch.tensor([0, *tree.depths()], dtype=torch.long)
        query_positions[b, :] = request.committed_length
        query_positions[b, :size_b] += depths
        tree_allowed[b, :size_b, :size_b] = ancestor_matrix(tree)

    slots = rows.valid.shape[1]
    allowed = torch.cat(
        [rows.valid[:, None, :].expand(batch, width, slots), tree_allowed], dim=2
    )  # (batch, query, slots + width)
    key_positions = torch.cat([rows.positions, query_positions], dim=1)
    mask = _masks(generator, allowed, query_positions, key_positions)
    output = generator.model(
        input_ids=input_ids.to(generator.device),
        attention_mask=mask,
        position_ids=query_positions.to(generator.device),
        cache=cache,
        use_cache=True,
    )
    logits = output.logits  # (batch, width, vocab)
    verify_time = time.perf_counter() - began

    kept = torch.zeros(batch, width, dtype=torch.bool)
    for b, (request, tree, buckets) in enumerate(zip(requests, trees, tree_buckets)):
        request.stats.forward_passes += 1
        request.stats.drafted_nodes += len(tree)
        request.stats.verify_time_s += verify_time
        children = tree.children()
        row_logits = logits[b]
        if request.sources and generator.draft.recycle_width:
            generator.recycling.update(input_ids[b, : len(tree) + 1], row_logits[: len(tree) + 1])
        path, bonus = walk_tree(
            children,
            lambda row, path, r=request, x=row_logits, t=tree: generator._choose(
                r, x[row : row + 1], row, path, t
            ),
        )
        kept[b, 0] = True
        for node in path:
            kept[b, node + 1] = True
        generator._record_acceptance(request, tree, buckets, children, path)
        generator._emit(request, [*(tree.token_ids[n] for n in path), bonus])
    if batch > 1 and batch & (batch - 1) == 0 and generator.draft.refit_cost_slope:
        cost = generator.batch_step_cost(batch)
        if isinstance(cost, AdaptiveCostModel):
            cost.observe(width, time.perf_counter() - step_start)
    return _Rows(
        requests,
        torch.cat([rows.valid, kept], dim=1),
        key_positions,
    )


def _masks(generator, allowed: torch.Tensor, query_positions, key_positions):
    """Turn ``allowed`` ``(batch, query, key)`` into the model's additive 4D mask(s)."""
    dtype = generator.dtype
    full = _additive(allowed, dtype).to(generator.device)
    window = generator.sliding_window
    if window is None:
        return full
    in_window = key_positions[:, None, :] > query_positions[:, :, None] - window
    sliding = _additive(allowed & in_window, dtype).to(generator.device)
    return {"full_attention": full, "sliding_attention": sliding}


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]  # (batch, 1, query, key)


def _drop_finished(rows: _Rows, cache, start: float) -> _Rows:
    """Remove finished requests from the batch and from the cache."""
    keep = [b for b, r in enumerate(rows.requests) if r.finish_reason is None]
    if len(keep) == len(rows.requests):
        return rows
    now = time.perf_counter()
    for r in rows.requests:
        if r.finish_reason is not None and not r.stats.total_time_s:
            r.stats.total_time_s = now - start
    if not keep:
        return _Rows([], rows.valid[:0], rows.positions[:0])
    index = torch.tensor(keep, dtype=torch.long)
    for layer in cache.layers:
        layer.batch_select_indices(index.to(layer.keys.device))
    return _Rows([rows.requests[b] for b in keep], rows.valid[index], rows.positions[index])


def _capacity(cache) -> int:
    layer = cache.layers[0] if cache.layers else None
    buffer = getattr(layer, "_key_buffer", None)
    return 0 if buffer is None else buffer.shape[-2]


def _waste(valid: torch.Tensor) -> float:
    return 1.0 - float(valid.sum()) / valid.numel() if valid.numel() else 0.0


def _compact(rows: _Rows, cache) -> _Rows:
    """Gather each row's valid slots to the front; the shorter rows are padded at the end."""
    counts = rows.valid.sum(dim=1)
    length = int(counts.max())
    # A stable sort puts valid slots first, in their original order.
    order = torch.sort((~rows.valid).to(torch.int8), dim=1, stable=True).indices[:, :length]
    for layer in cache.layers:
        layer.gather_slots(order)
    valid = torch.arange(length)[None, :] < counts[:, None]
    positions = torch.gather(rows.positions, 1, order)
    return _Rows(rows.requests, valid, positions)
