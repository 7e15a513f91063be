"""Option dataclasses for generation and drafting.

Each dataclass validates its fields once, when it is built, and raises ``ValueError`` naming the
field, the value received and the accepted range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from reader_rag.token_ids import as_token_ids

__all__ = ["DraftConfig", "GenerationConfig"]

MAX_RECYCLE_WIDTH = 64
"""Largest ``DraftConfig.recycle_width``. The recycling table stores vocabulary size times
``max(8, recycle_width)`` entries of 8 bytes, so a width of 64 takes 25 MB for SmolLM2's 49,152
tokens and 134 MB for Gemma 3's 262,144."""

MAX_COST_POINT = 1024
"""Largest ``DraftConfig.cost_points`` entry. Measuring the cost curve times forward passes
over every entry's number of tokens, so a huge entry would stall the first request."""

_DRAFT_INTEGER_FIELDS = (
    "max_depth", "min_match_length", "max_match_length", "max_occurrences", "max_indexed_tokens",
    "recycle_width", "history_tokens", "prompt_seed_tokens",
)

# torch.Generator.manual_seed (torch 2.13) raises for seeds outside this range.
_SEED_RANGE = (-(2**63), 2**64 - 1)


def _is_integer(value: object) -> bool:
    """Return whether ``value`` is an integer (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """Return whether ``value`` is a real number (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_integer(name: str, value: object, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer of at least ``minimum``."""
    if not _is_integer(value) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


def _check_real(name: str, value: object, accepted: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number. ``accepted`` names the range."""
    if not _is_real(value):
        raise ValueError(f"{name} must be a number {accepted}, got {value!r}")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options of one request.

    ``temperature == 0`` selects greedy decoding. Any positive temperature samples, and then
    ``top_k``, ``top_p`` and ``seed`` apply. ``repetition_penalty`` applies in both modes, as in
    Hugging Face ``generate``.
    """

    max_new_tokens: int = 128
    """Maximum number of tokens to generate; at least 1."""
    temperature: float = 0.0
    """Softmax temperature; 0 means greedy decoding, otherwise a positive float."""
    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens before sampling; 0 disables the filter."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1.0 disables the filter."""
    repetition_penalty: float = 1.0
    """Penalty (> 0) for tokens already in the sequence; 1.0 disables it."""
    seed: int | None = None
    """Seed of the sampling generator, an integer from -2**63 to 2**64 - 1. ``None`` draws a
    fresh seed for each request."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; the returned text is cut before the first one."""
    eos_token_ids: tuple[int, ...] | None = None
    """Token ids (integers of 0 or more) that end generation. ``None`` takes them from the
    model's generation config. One integer or any iterable of integers is stored as a tuple."""

    def __post_init__(self) -> None:
        if self.stop is None:
            object.__setattr__(self, "stop", ())
        elif isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, Iterable):
            object.__setattr__(self, "stop", tuple(self.stop))
        else:
            raise ValueError(f"stop must be a string or a list of strings, got {self.stop!r}")
        if not _is_integer(self.max_new_tokens):
            raise ValueError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        _check_real("temperature", self.temperature, "of 0 (greedy) or more")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"temperature must be 0 (greedy) or a positive number, got {self.temperature}"
            )
        if not _is_integer(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        _check_real("top_p", self.top_p, "in (0, 1]")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}")
        _check_real("repetition_penalty", self.repetition_penalty, "above 0")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be a positive number (1.0 disables it), "
                f"got {self.repetition_penalty}"
            )
        if self.seed is not None and (
            not _is_integer(self.seed) or not _SEED_RANGE[0] <= self.seed <= _SEED_RANGE[1]
        ):
            raise ValueError(
                f"seed must be None or an integer from -2**63 to 2**64 - 1, got {self.seed!r}"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must contain non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(str(s) for s in self.stop))
        if self.eos_token_ids is not None:
            object.__setattr__(self, "eos_token_ids", _token_id_tuple(self.eos_token_ids))
        # NumPy and other numeric types are stored as Python numbers, which torch and JSON take.
        for name in ("max_new_tokens", "top_k"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("temperature", "top_p", "repetition_penalty"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))

    @property
    def do_sample(self) -> bool:
        """Whether tokens are sampled rather than chosen by argmax."""
        return self.temperature > 0


@dataclass(frozen=True)
class DraftConfig:
    """Options of the draft tree proposed at every decoding step."""

    max_nodes: int | None = None
    """Upper bound on draft nodes per step. ``None`` lets the cost model choose the size at
    every step; 0 turns speculation off (one token per forward pass)."""
    max_depth: int = 16
    """Maximum depth of the draft tree, in tokens after the last committed token."""
    min_match_length: int = 1
    """Shortest suffix match, in tokens, that may propose continuations."""
    max_match_length: int = 32
    """Longest suffix match, in tokens, that the request index measures."""
    max_occurrences: int = 64
    """Maximum number of earlier occurrences of a match used to count continuations."""
    probability_floor: float = 0.02
    """Draft nodes whose estimated acceptance probability is below this are never drafted."""
    max_indexed_tokens: int = 262_144
    """Maximum number of document tokens kept in the request index; later documents are cut,
    with a warning."""
    cost_points: tuple[int, ...] = field(default=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64))
    """Tree sizes (tokens per forward pass) at which the cost model times the model: integers
    of at least 1, including 1. Any iterable is stored as a tuple."""
    recycle_width: int = 4
    """Recycled candidates offered per tree node: the model's top next tokens after the node's
    token, from the latest verification pass that computed them. 0 turns token recycling off,
    and at most :data:`MAX_RECYCLE_WIDTH` (64) are accepted, because the recycling table keeps
    this many candidates for every vocabulary entry."""
    history_tokens: int = 65_536
    """Token budget of the response history, the generator's earlier outputs that later
    requests draft from. 0 turns the history off."""
    prompt_seed_tokens: int = 4_096
    """At prefill, seed the recycling table with the model's top next tokens after each
    distinct prompt token, scored over the token ids below this bound and the prompt's own
    tokens. Byte-pair vocabularies give their most frequent tokens the lowest ids. 0 turns the
    seeding off; it is also off when ``recycle_width`` is 0."""
    refit_cost_slope: bool = True
    """Refit the slope of the cached cost curve to the timed steps of single-request
    decoding (see :class:`~reader_rag.drafting.cost_model.AdaptiveCostModel`). False keeps the
    measured curve as it is, which makes tree sizes independent of earlier requests' timing."""

    def __post_init__(self) -> None:
        if self.max_nodes is not None and (not _is_integer(self.max_nodes) or self.max_nodes < 0):
            raise ValueError(
                f"max_nodes must be None or an integer of at least 0 (0 turns speculation off), "
                f"got {self.max_nodes!r}"
            )
        _check_integer("max_depth", self.max_depth, 1)
        _check_integer("min_match_length", self.min_match_length, 1)
        _check_integer("max_match_length", self.max_match_length, 1)
        if self.max_match_length < self.min_match_length:
            raise ValueError(
                f"max_match_length ({self.max_match_length}) must be >= min_match_length "
                f"({self.min_match_length})"
            )
        _check_integer("max_occurrences", self.max_occurrences, 1)
        _check_real("probability_floor", self.probability_floor, "in [0, 1)")
        if not (0.0 <= self.probability_floor < 1.0):
            raise ValueError(f"probability_floor must be in [0, 1), got {self.probability_floor}")
        _check_integer("max_indexed_tokens", self.max_indexed_tokens, 1)
        for name in ("recycle_width", "history_tokens", "prompt_seed_tokens"):
            value = getattr(self, name)
            if not _is_integer(value) or value < 0:
                raise ValueError(f"{name} must be an integer of 0 or more, got {value!r}")
        if self.recycle_width > MAX_RECYCLE_WIDTH:
            raise ValueError(
                f"recycle_width must be at most {MAX_RECYCLE_WIDTH}, got {self.recycle_width}, "
                "because the recycling table keeps that many candidates for every vocabulary entry"
            )
        if not isinstance(self.refit_cost_slope, (bool, np.bool_)):
            raise ValueError(f"refit_cost_slope must be True or False, got {self.refit_cost_slope!r}")
        self._check_cost_points()
        # NumPy and other numeric types are stored as Python numbers.
        for name in _DRAFT_INTEGER_FIELDS:
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.max_nodes is not None:
            object.__setattr__(self, "max_nodes", int(self.max_nodes))
        object.__setattr__(self, "probability_floor", float(self.probability_floor))
        object.__setattr__(self, "refit_cost_slope", bool(self.refit_cost_slope))

    def _check_cost_points(self) -> None:
        if not isinstance(self.cost_points, Iterable) or isinstance(self.cost_points, str):
            raise ValueError(
                f"cost_points must be a tuple of integers of at least 1, got {self.cost_points!r}"
            )
        points = tuple(self.cost_points)
        invalid = [point for point in points if not _is_integer(point) or point < 1]
        if invalid:
            raise ValueError(
                f"cost_points must contain integers of at least 1, got {invalid[0]!r} in "
                f"{points!r}"
            )
        if 1 not in points:
            raise ValueError(f"cost_points must include 1, got {points}")
        if max(points) > MAX_COST_POINT:
            raise ValueError(
                f"cost_points must be at most {MAX_COST_POINT}, got {max(points)}: each point is "
                "timed with forward passes over that many tokens"
            )
        object.__setattr__(self, "cost_points", tuple(int(point) for point in points))


def _token_id_tuple(ids: object) -> tuple[int, ...]:
    """Return ``eos_token_ids`` as a tuple of ints, or raise ``ValueError`` naming the bad id."""
    if _is_integer(ids):
        ids = (ids,)
    token_ids = tuple(as_token_ids(ids, "eos_token_ids"))
    negative = [token_id for token_id in token_ids if token_id < 0]
    if negative:
        raise ValueError(
            f"eos_token_ids must contain token ids of 0 or more, got {negative[0]} in {token_ids}"
        )
    return token_ids
