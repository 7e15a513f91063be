"""Results and per-request statistics of one generation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

__all__ = ["GenerationResult", "GenerationStats", "GenerationStream"]


@dataclass
class GenerationStats:
    """Counters and timings of one request. Times are wall-clock seconds."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    forward_passes: int = 0
    """Target-model forward passes, the prefill included."""
    drafted_nodes: int = 0
    """Draft nodes verified, summed over steps."""
    accepted_draft_tokens: int = 0
    """Draft tokens the target accepted; each step also emits one bonus token of its own."""
    indexed_tokens: int = 0
    """Tokens in the request index at the start (documents and prompt)."""
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    """Accepted draft tokens by the source that drafted them: ``request`` (the request's own
    index), ``recycle`` (token recycling), ``history`` (earlier outputs), ``corpus`` (a store's
    datastore) or ``oracle``."""
    prefill_time_s: float = 0.0
    draft_time_s: float = 0.0
    """Time spent building draft trees."""
    verify_time_s: float = 0.0
    """Time in target forward passes after the prefill."""
    total_time_s: float = 0.0
    batch_size: int = 1
    """Requests decoded together with this one (1 outside ``generate_batch``)."""
    compaction_time_s: float = 0.0
    """Time the batch spent compacting its KV cache (shared by all its requests)."""
    peak_slots: int = 0
    """Longest KV cache row of the batch, in slots, masked slots included (batches only)."""
    peak_capacity: int = 0
    """Largest allocated KV cache row of the batch, in slots (batches only)."""

    @property
    def tokens_per_step(self) -> float:
        """New tokens per target forward pass; plain decoding gives exactly 1.0."""
        return self.new_tokens / self.forward_passes if self.forward_passes else 0.0

    @property
    def tokens_per_second(self) -> float:
        """New tokens per second of total time, the prefill included."""
        return self.new_tokens / self.total_time_s if self.total_time_s else 0.0

    def to_dict(self) -> dict:
        """Return the counters and derived rates as plain JSON-serializable values."""
        data = asdict(self)
        data["tokens_per_step"] = self.tokens_per_step
        data["tokens_per_second"] = self.tokens_per_second
        return data


@dataclass
class GenerationResult:
    """Output of one request.

    ``token_ids`` are the new tokens only. They include an EOS token, or the tokens of a stop
    string, where generation ended on one, as Hugging Face ``generate`` does. ``text`` is their
    decoding without special tokens, cut before the first stop string.
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    """``"eos"``, ``"stop"`` (a stop string) or ``"length"`` (``max_new_tokens`` reached)."""
    stats: GenerationStats


class GenerationStream:
    """Iterator over text pieces of one request, as tokens are accepted.

    The pieces concatenate to ``result.text``. ``result`` is set once the iterator is exhausted;
    closing the stream early (``close()`` or leaving a ``for`` loop) stops generation.
    """

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating; the model and generator stay usable."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
