"""Option dataclasses for generation and drafting.

Each dataclass validates its fields once, when it is built, and raises ``ValueError`` naming the
field, the value received and the accepted range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["DraftConfig", "GenerationConfig"]


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
    """Seed of the sampling generator; ``None`` draws a fresh seed for each request."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; the returned text is cut before the first one."""
    eos_token_ids: tuple[int, ...] | None = None
    """Token ids that end generation; ``None`` takes them from the model's generation config."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(
                f"temperature must be 0 (greedy) or a positive number, got {self.temperature}"
            )
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be a positive number (1.0 disables it), "
                f"got {self.repetition_penalty}"
            )
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must contain non-empty strings, got {self.stop!r}")

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
    """Tree sizes (tokens per forward pass) at which the cost model times the model."""
    recycle_width: int = 4
    """Recycled candidates offered per tree node: the model's top next tokens after the node's
    token, from the latest verification pass that computed them. 0 turns token recycling off."""
    history_tokens: int = 65_536
    """Token budget of the response history, the generator's earlier outputs that later
    requests draft from. 0 turns the history off."""
    prompt_seed_tokens: int = 4_096
    """At prefill, seed the recycling table with the model's top next tokens after each
    distinct prompt token, scored over the token ids below this bound and the prompt's own
    tokens. Byte-pair vocabularies give their most frequent tokens the lowest ids. 0 turns the
    seeding off; it is also off when ``recycle_width`` is 0."""
    refit_cost_slope: bool = True
    """Refit the slope of the cached cost curve to the timed forward passes of single-request
    decoding (see :class:`~reader_rag.drafting.cost_model.AdaptiveCostModel`). False keeps the
    measured curve as it is, which makes tree sizes independent of earlier requests' timing."""

    def __post_init__(self) -> None:
        if self.max_nodes is not None and self.max_nodes < 0:
            raise ValueError(f"max_nodes must be None, 0 or positive, got {self.max_nodes}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {self.max_depth}")
        if self.min_match_length < 1:
            raise ValueError(f"min_match_length must be at least 1, got {self.min_match_length}")
        if self.max_match_length < self.min_match_length:
            raise ValueError(
                f"max_match_length ({self.max_match_length}) must be >= min_match_length "
                f"({self.min_match_length})"
            )
        if self.max_occurrences < 1:
            raise ValueError(f"max_occurrences must be at least 1, got {self.max_occurrences}")
        if not (0.0 <= self.probability_floor < 1.0):
            raise ValueError(f"probability_floor must be in [0, 1), got {self.probability_floor}")
        if self.max_indexed_tokens < 1:
            raise ValueError(
                f"max_indexed_tokens must be at least 1, got {self.max_indexed_tokens}"
            )
        for name in ("recycle_width", "history_tokens", "prompt_seed_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer of 0 or more, got {value!r}")
        if not isinstance(self.refit_cost_slope, bool):
            raise ValueError(f"refit_cost_slope must be True or False, got {self.refit_cost_slope!r}")
        if not self.cost_points or min(self.cost_points) != 1:
            raise ValueError(f"cost_points must include 1, got {self.cost_points}")
