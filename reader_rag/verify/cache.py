"""Committing the KV entries of accepted draft nodes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import Cache
from transformers.cache_utils import DynamicLayer

__all__ = ["GrowableLayer", "commit_kv", "new_cache", "truncate_cache"]


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


class GrowableLayer(DynamicLayer):
    """A dynamic cache layer backed by a preallocated buffer that doubles when full.

    ``DynamicLayer`` concatenates on every update, copying the whole layer each step. Here an
    update writes into spare capacity and ``keys``/``values`` are views of the filled part, so a
    step copies only its new entries (plus a doubling now and then, amortized O(1) per entry).
    """

    def __init__(self, *args, initial_capacity: int = 1024, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._initial_capacity = initial_capacity
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_buffer = self._allocate(key_states, self._initial_capacity)
        self._value_buffer = self._allocate(value_states, self._initial_capacity)
        self._set_length(0)

    @staticmethod
    def _allocate(like: torch.Tensor, capacity: int) -> torch.Tensor:
        batch, heads, _, dim = like.shape
        return torch.empty(batch, heads, capacity, dim, dtype=like.dtype, device=like.device)

    def _set_length(self, length: int) -> None:
        self._length = length
        self.keys = self._key_buffer[:, :, :length]
        self.values = self._value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self._length
        end = start + key_states.shape[-2]
        capacity = self._key_buffer.shape[-2]
        if end > capacity:
            new_capacity = max(end, 2 * capacity)
            for name in ("_key_buffer", "_value_buffer"):
                old = getattr(self, name)
                grown = self._allocate(old, new_capacity)
                grown[:, :, :start] = old[:, :, :start]
                setattr(self, name, grown)
        self._key_buffer[:, :, start:end] = key_states
        self._value_buffer[:, :, start:end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of entries, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self._set_length(max(0, self._length + tokens_to_remove))

    def reset(self) -> None:
        super().reset()
        self._key_buffer = self._value_buffer = None
        self._length = 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only the batch rows ``indices`` (requests that leave the batch free their rows)."""
        if not self.is_initialized:
            return
        self._key_buffer = self._key_buffer[indices]
        self._value_buffer = self._value_buffer[indices]
        self._set_length(self._length)

    def gather_slots(self, slots: torch.Tensor) -> None:
        """Rebuild the layer from ``slots`` ``(batch, length)``: row b keeps slots[b] in order."""
        if not self.is_initialized:
            return
        batch, heads, _, dim = self._key_buffer.shape
        length = slots.shape[1]
        index = slots.to(self._key_buffer.device)[:, None, :, None].expand(batch, heads, length, dim)
        capacity = max(self._initial_capacity, 2 * length)
        for name in ("_key_buffer", "_value_buffer"):
            old = getattr(self, name)
            grown = self._allocate(old, capacity)
            grown[:, :, :length] = torch.gather(old[:, :, : self._length], 2, index)
            setattr(self, name, grown)
        self._set_length(length)


def new_cache() -> Cache:
    """Return an empty KV cache whose layers grow in place (see :class:`GrowableLayer`)."""
    return Cache(layer_class_to_replicate=GrowableLayer)
