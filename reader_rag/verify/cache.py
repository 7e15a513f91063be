"""Committing the KV entries of accepted draft nodes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Cache

__all__ = ["commit_kv", "truncate_cache"]


def commit_kv(cache: Cache, prefix_length: int, keep_rows: Sequence[int]) -> None:
    """Keep the KV entries of ``keep_rows`` of the last tree pass, in that order, and drop the rest.

    After a tree pass the cache holds ``prefix_length`` committed entries followed by one entry per
    tree row (row 0 is the root). ``keep_rows`` are the rows on the accepted path, starting with 0.
    When they are already the leading rows (a chain, or the first branch), the cache is only
    truncated; otherwise the kept entries are gathered to the front first.
    """
    kept = len(keep_rows)
    if list(keep_rows) != list(range(kept)):
        index = torch.as_tensor(keep_rows, dtype=torch.long) + prefix_length
        for layer in cache.layers:
            index = index.to(layer.keys.device)
            # The right side is a copy (advanced indexing), so overlapping slots are safe.
            layer.keys[:, :, prefix_length : prefix_length + kept] = layer.keys[:, :, index]
            layer.values[:, :, prefix_length : prefix_length + kept] = layer.values[:, :, index]
    truncate_cache(cache, prefix_length + kept)


def truncate_cache(cache: Cache, length: int) -> None:
    """Drop cache entries past ``length``. ``Cache.crop`` takes a negative count of entries to
    remove in transformers 5.x."""
    excess = cache.get_seq_length() - length
    if excess > 0:
        cache.crop(-excess)
