"""Token recycling: the target's own top candidates, kept per token and reused as drafts.

Every verification pass computes logits at the root and at every draft node, accepted or not.
Each row of logits follows one input token, so its top-k next tokens show what the model tends
to write after that token. The table keeps, for each token id, the top-k of the most recent row
that followed it. Drafting reads the table to extend a path where the suffix sources have no
continuation, and to branch beside their proposals. The table costs one top-k per pass and no
extra model.

Entries are overwritten without a lock. A concurrent reader can see a row half updated, which
only changes what is drafted; verification decides what is emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RecyclingTable"]


class RecyclingTable:
    """For each token id, the ``k`` most likely next tokens of the last logits row that followed it.

    Args:
        vocab_size: Number of rows; token ids at or above it are ignored.
        k: Candidates kept per token.

    ``probabilities[t]`` is the softmax of the top-k logits among themselves, so a row sums to 1
    and its first entry is the model's most likely next token. Rows never seen hold token id -1.
    """

    def __init__(self, vocab_size: int, k: int = 8) -> None:
        if vocab_size < 1 or k < 1:
            raise ValueError(f"vocab_size and k must be positive, got {vocab_size} and {k}")
        self.vocab_size = vocab_size
        self.k = min(k, vocab_size)
        self.token_ids = np.full((vocab_size, self.k), -1, dtype=np.int32)
        self.probabilities = np.zeros((vocab_size, self.k), dtype=np.float32)

    def update(self, input_ids: Sequence[int] | torch.Tensor, logits: torch.Tensor) -> None:
        """Record the top-k of each row of ``logits`` (shape ``(rows, vocab)``) under the input
        token that the row follows."""
        if logits.shape[0] == 0:
            return
        values, indices = logits.float().topk(self.k, dim=-1)
        probabilities = torch.softmax(values, dim=-1)
        keys = np.asarray(
            input_ids.tolist() if isinstance(input_ids, torch.Tensor) else input_ids,
            dtype=np.int64,
        )
        self.update_rows(keys, indices.cpu().numpy(), probabilities.cpu().numpy())

    def update_rows(
        self, keys: np.ndarray, token_ids: np.ndarray, probabilities: np.ndarray
    ) -> None:
        """Store precomputed top-k rows: ``token_ids[i]`` and ``probabilities[i]`` follow
        ``keys[i]``. Later rows win when a key repeats."""
        keys = np.asarray(keys, dtype=np.int64)
        valid = (keys >= 0) & (keys < self.vocab_size)
        width = min(self.k, token_ids.shape[1])
        self.token_ids[keys[valid], :width] = token_ids[valid, :width]
        self.probabilities[keys[valid], :width] = probabilities[valid, :width]

    def next_tokens(self, token: int, limit: int) -> list[tuple[int, float]]:
        """Return up to ``limit`` (token, probability) pairs recorded after ``token``, best first."""
        if not 0 <= token < self.vocab_size:
            return []
        ids = self.token_ids[token, :limit].tolist()
        probabilities = self.probabilities[token, :limit].tolist()
        return [(t, p) for t, p in zip(ids, probabilities) if t >= 0]

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a copy of the table, for :meth:`restore`."""
        return self.token_ids.copy(), self.probabilities.copy()

    def restore(self, snapshot: tuple[np.ndarray, np.ndarray]) -> None:
        """Return to the rows of an earlier :meth:`snapshot` of this table."""
        token_ids, probabilities = snapshot
        if token_ids.shape != self.token_ids.shape or probabilities.shape != self.probabilities.shape:
            raise ValueError(
                f"snapshot of shape {token_ids.shape} does not fit this table of shape "
                f"{self.token_ids.shape}; restore only snapshots of the same generator"
            )
        self.token_ids[:] = token_ids
        self.probabilities[:] = probabilities

    def clear(self) -> None:
        """Forget every recorded row."""
        self.token_ids.fill(-1)
        self.probabilities.fill(0.0)
