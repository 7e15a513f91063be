"""Token recycling: the target's own top candidates, kept per token and reused as drafts.

Every verification pass computes logits at the root and at every draft node, accepted or not.
Each row of logits follows one input token, so its top-k next tokens show what the model tends
to write after that token. The table keeps, for each token id, the top-k of the most recent row
that followed it. Drafting reads the table to extend a path where the suffix sources have no
continuation, and to branch beside their proposals. The table costs one top-k per pass and no
extra model.

At prefill, the prompt's final hidden states give a row for every prompt token, in the context of
the request's own documents, before any draft node has been verified. :func:`prompt_rows`
scores them over a reduced vocabulary, at about a tenth of the cost of the full output layer.

Entries are overwritten without a lock. A concurrent reader can see a row half updated, which
only changes what is drafted; verification decides what is emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["PROMPT_ROWS_CHUNK", "RecyclingTable", "prompt_rows"]


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
        if keys.size == 0:
            return
        valid = (keys >= 0) & (keys < self.vocab_size)
        width = min(self.k, token_ids.shape[1])
        self.token_ids[keys[valid], :width] = token_ids[valid, :width]
        self.probabilities[keys[valid], :width] = probabilities[valid, :width]
        self.token_ids[keys[valid], width:] = -1
        self.probabilities[keys[valid], width:] = 0.0

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


PROMPT_ROWS_CHUNK = 1024
"""Prompt positions scored per matrix product, which bounds the memory of long prompts."""


def prompt_rows(
    prompt_ids: Sequence[int],
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    common_tokens: int,
    k: int,
    head_bias: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return recycling rows for the prompt: the top-k next tokens after each distinct token.

    ``hidden`` is the prompt's final hidden states, shape ``(len(prompt_ids), hidden)``.
    ``head_weight`` is the output layer's weight, shape ``(vocab, hidden)``, and ``head_bias``
    its bias, if it has one. Each distinct
    token of the prompt, except the last position (whose exact logits the prefill computes
    anyway), gets the row of its last occurrence. The logits are computed only for the token ids
    below ``common_tokens`` and the prompt's own tokens, where a request's drafts come from:
    exact for those tokens, and much cheaper than the full vocabulary. Logit transforms of the
    model's head that keep the order, such as soft-capping, do not change the top-k ids, but the
    probabilities come from the untransformed logits. Positions are scored in chunks of
    :data:`PROMPT_ROWS_CHUNK`, so memory grows linearly with the number of distinct tokens.

    Returns ``(keys, token_ids, probabilities)`` for :meth:`RecyclingTable.update_rows`, with
    ``probabilities`` the softmax of each row's top-k logits among themselves.
    """
    vocab_size = int(head_weight.shape[0])
    last: dict[int, int] = {}
    for position, token in enumerate(prompt_ids[:-1]):
        if 0 <= token < vocab_size:
            last[int(token)] = position
    if not last:
        return (
            np.zeros(0, dtype=np.int64),
            np.zeros((0, k), dtype=np.int32),
            np.zeros((0, k), dtype=np.float32),
        )
    device = head_weight.device
    vocabulary = torch.unique(
        torch.cat(
            [
                torch.arange(min(common_tokens, vocab_size), device=device),
                torch.tensor(list(last), device=device),
            ]
        )
    )
    positions = torch.tensor(list(last.values()), device=hidden.device)
    width = min(k, int(vocabulary.numel()))
    ids, probabilities = [], []
    with torch.no_grad():
        weight = head_weight[vocabulary].T
        bias = head_bias[vocabulary] if head_bias is not None else None
        for start in range(0, len(positions), PROMPT_ROWS_CHUNK):
            rows = hidden[positions[start : start + PROMPT_ROWS_CHUNK]]
            logits = rows.to(head_weight.device, head_weight.dtype) @ weight
            if bias is not None:
                logits = logits + bias
            values, indices = logits.float().topk(width, dim=-1)
            ids.append(vocabulary[indices].cpu().numpy().astype(np.int32))
            probabilities.append(torch.softmax(values, dim=-1).cpu().numpy())
    keys = np.asarray(list(last), dtype=np.int64)
    return keys, np.concatenate(ids), np.concatenate(probabilities)
