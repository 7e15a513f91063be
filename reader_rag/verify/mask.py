"""Tree attention masks and position ids for verifying a draft tree in one forward pass."""

from __future__ import annotations

import torch

from reader_rag.drafting.tree import DraftTree

__all__ = ["ancestor_matrix", "tree_attention_inputs"]


def ancestor_matrix(tree: DraftTree) -> torch.Tensor:
    """Return a bool matrix ``(q, q)`` with ``q = len(tree) + 1``: row r may attend column c.

    Row 0 is the root (the last committed token); row ``i + 1`` is node ``i``. Each row attends
    to itself and its ancestors, the root included, and to nothing else in the tree.
    """
    size = len(tree) + 1
    allowed = torch.zeros(size, size, dtype=torch.bool)
    allowed[0, 0] = True
    for i, parent in enumerate(tree.parents):
        row = i + 1
        allowed[row] = allowed[parent + 1]
        allowed[row, row] = True
    return allowed


def tree_attention_inputs(
    tree: DraftTree,
    prefix_length: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    sliding_window: int | None = None,
) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
    """Build the additive 4D attention mask and the position ids of one tree forward pass.

    Args:
        tree: The draft tree; the forward pass feeds the root token, then the nodes in order.
        prefix_length: Number of committed tokens already in the KV cache.
        dtype: Dtype of the mask; masked entries hold ``torch.finfo(dtype).min``.
        sliding_window: For models with sliding-window layers (Gemma 3), the window size. A query
            at position p then also gets a second mask that hides keys at positions <= p - window,
            and the masks are returned as ``{"full_attention": ..., "sliding_attention": ...}``.

    Returns:
        ``mask`` of shape ``(1, 1, q, prefix_length + q)`` (or a dict of two), and
        ``position_ids`` of shape ``(1, q)``: ``prefix_length + depth``, with the root at depth 0.
    """
    size = len(tree) + 1
    depths = torch.tensor([0, *tree.depths()], dtype=torch.long)
    positions = prefix_length + depths  # (q,)

    allowed = torch.ones(size, prefix_length + size, dtype=torch.bool)
    allowed[:, prefix_length:] = ancestor_matrix(tree)
    full = _additive(allowed, dtype, device)
    position_ids = positions.unsqueeze(0).to(device)
    if sliding_window is None:
        return full, position_ids

    # Key positions: the prefix holds positions 0..prefix_length-1, tree keys their own positions.
    key_positions = torch.cat([torch.arange(prefix_length), positions])
    in_window = key_positions.unsqueeze(0) > positions.unsqueeze(1) - sliding_window
    sliding = _additive(allowed & in_window, dtype, device)
    return {"full_attention": full, "sliding_attention": sliding}, position_ids


def _additive(allowed: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None].to(device)  # (1, 1, q, kv)
