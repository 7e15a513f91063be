"""Validation of token id sequences passed in by callers.

``int()`` truncates floats, so ``[1.7, 2.2]`` or a float tensor would silently become other
token ids. :func:`as_token_ids` accepts only integer values and integer dtypes.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable

__all__ = ["as_token_ids"]


def as_token_ids(ids: object, name: str) -> list[int]:
    """Return ``ids`` as a list of Python ints, or raise ``ValueError`` naming ``name``.

    Accepts a one-dimensional integer torch tensor or NumPy array, or any iterable of Python
    ints, NumPy integers or one-element integer tensors. Rejects floats, bools, strings and
    arrays of another dtype or shape. Ranges (non-negative, inside the vocabulary) are left to
    the caller.
    """
    dtype = getattr(ids, "dtype", None)
    if dtype is not None and hasattr(ids, "tolist"):
        return _array_token_ids(ids, dtype, name)
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(
            f"{name} must be a sequence of integer token ids, got {type(ids).__name__} {ids!r}"
        )

    token_ids = []
    for position, value in enumerate(ids):
        if type(value) is int:
            token_ids.append(value)
            continue
        if not _is_integer_scalar(value):
            raise ValueError(
                f"{name} must contain integer token ids, got {type(value).__name__} {value!r} "
                f"at position {position}; pass the ids that the tokenizer returns"
            )
        token_ids.append(operator.index(value))
    return token_ids


def _array_token_ids(ids, dtype, name: str) -> list[int]:
    """Convert a torch tensor or NumPy array after checking its dtype and shape."""
    if not _is_integer_dtype(dtype):
        raise ValueError(
            f"{name} must have an integer dtype, got {dtype}; pass the ids that the tokenizer "
            "returns, or convert whole-number values with .long() (torch) or .astype(int) (NumPy)"
        )
    if ids.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional, got shape {tuple(ids.shape)}; pass one sequence "
            "without a batch dimension"
        )
    return [int(value) for value in ids.tolist()]


def _is_integer_dtype(dtype) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dtype, torch.dtype):
        return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    kind = getattr(dtype, "kind", None)  # NumPy: "i" signed, "u" unsigned integers
    return kind in ("i", "u")


def _is_integer_scalar(value: object) -> bool:
    """Return whether ``value`` is an integer, excluding bools and bool or float tensors."""
    if isinstance(value, bool):
        return False
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not _is_integer_dtype(dtype):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True
