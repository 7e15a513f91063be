"""Measured cost of a forward pass as a function of the number of tokens it verifies.

On a CPU, verifying 16 tokens costs about 1.7 times one token for a 135M model, so a big tree
rarely pays. On a GPU the curve stays flat much longer. The cost model times the real model once
per model, dtype, device and thread count, caches the curve as JSON, and gives the relative cost
of any tree size by linear interpolation. :class:`AdaptiveCostModel` keeps that curve's shape and
refits its slope to the step times that decoding observes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["AdaptiveCostModel", "CostModel", "cache_dir"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def cache_dir() -> Path:
    """Return the folder for cached artifacts: ``$READER_RAG_CACHE`` or ``~/.cache/reader_rag``."""
    root = os.environ.get("READER_RAG_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "reader_rag"


class CostModel:
    """Relative forward-pass cost by number of tokens, with ``cost(1) == 1``.

    Args:
        seconds: Measured seconds of one forward pass, by number of tokens. Must include 1.
    """

    def __init__(self, seconds: Mapping[int, float]) -> None:
        if 1 not in seconds:
            raise ValueError(f"the cost curve needs a point at 1 token, got {sorted(seconds)}")
        self.seconds = dict(sorted((int(n), float(s)) for n, s in seconds.items()))
        self._sizes = list(self.seconds)
        base = self.seconds[1]
        # Costs never decrease with size; timing noise can make a measured point dip.
        relative: list[float] = []
        for n in self._sizes:
            value = self.seconds[n] / base
            relative.append(max(value, relative[-1]) if relative else value)
        self._relative = relative

    def __call__(self, tokens: int) -> float:
        """Return the cost of a forward pass over ``tokens`` tokens, relative to one token."""
        if not math.isfinite(tokens) or tokens < 1:
            raise ValueError(f"tokens must be a finite number of at least 1, got {tokens!r}")
        sizes, relative = self._sizes, self._relative
        if tokens <= sizes[0]:
            return relative[0]
        for i in range(1, len(sizes)):
            if tokens <= sizes[i]:
                share = (tokens - sizes[i - 1]) / (sizes[i] - sizes[i - 1])
                return relative[i - 1] + share * (relative[i] - relative[i - 1])
        # Past the last point, extrapolate with the slope of the last segment.
        slope = (relative[-1] - relative[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else 0
        return relative[-1] + (tokens - sizes[-1]) * slope

    @property
    def max_tokens(self) -> int:
        """Largest measured size."""
        return self._sizes[-1]

    def to_json(self) -> dict:
        return {"version": _FORMAT_VERSION, "seconds": {str(n): s for n, s in self.seconds.items()}}

    @classmethod
    def from_json(cls, data: Mapping) -> CostModel:
        return cls({int(n): float(s) for n, s in data["seconds"].items()})

    @staticmethod
    def cache_path(key: str) -> Path:
        """Return the cache file for the model/device ``key``."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir() / "cost_models" / f"{digest}.json"

    @classmethod
    def load_cached(cls, key: str) -> CostModel | None:
        """Return the cached curve for ``key``, or ``None`` if there is none or it is unreadable.

        NOTE: a curve measured while other processes loaded the CPU is cached as it is and can
        make every tree look too expensive, which turns speculation off without an error. Delete
        ``cost_models/`` under :func:`cache_dir` to measure again on a quiet machine.
        """
        path = cls.cache_path(key)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != _FORMAT_VERSION or data.get("key") != key:
                return None
            return cls.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, key: str) -> None:
        """Write the curve to the cache atomically; failures are logged, not raised."""
        path = self.cache_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**self.to_json(), "key": key}, indent=1))
            os.replace(tmp, path)
        except OSError as error:
            logger.warning("could not cache the cost model at %s: %s", path, error)

    @classmethod
    def measure(
        cls, time_forward, sizes: Sequence[int], rounds: int = 5, warmup: int = 1
    ) -> CostModel:
        """Time ``time_forward(n)`` (one forward pass over n tokens) at each size.

        The sizes are timed in turns, ``rounds`` times each, and each size keeps its fastest run.
        Other processes only ever add time, so the minimum is the least noisy estimate, and
        taking turns spreads any slow period over all sizes instead of one.
        """
        for n in sizes:
            for _ in range(warmup):
                time_forward(n)
        best = {n: float("inf") for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                start = time.perf_counter()
                time_forward(n)
                best[n] = min(best[n], time.perf_counter() - start)
        model = cls(best)
        logger.info(
            "measured forward cost relative to 1 token: %s",
            ", ".join(f"{n}: {model(n):.2f}" for n in sizes),
        )
        return model


class AdaptiveCostModel:
    """A measured cost curve whose slope follows the forward passes timed while decoding.

    A step over n tokens takes about ``A + B * (c(n) - 1)`` seconds, where ``c`` is the measured
    relative curve. ``A`` is what every step pays (mostly reading the weights, plus the drafting
    and bookkeeping around the pass) and ``B`` scales the arithmetic that grows with the tokens. On a shared virtual machine the two drift apart
    with memory bandwidth and load. On a 2-core AMD EPYC, one SmolLM2 token took 23.5 ms when
    the curve was cached and 17.5 ms a day later, while 16 tokens stayed near 31 ms. The cached
    curve then priced 16 tokens at 1.4 times one token instead of 1.8. The model refits ``A`` and
    ``B`` by least squares over the observed passes, with older passes weighted down
    exponentially, and returns ``1 + (B / A) * (c(n) - 1)``. Once a fit exists, each time is
    clipped to within a factor of 1.5 of its prediction, so one stall (a garbage collection, a
    buffer that grows, another process) moves the fit no more than an ordinary slow pass.

    Args:
        measured: The measured curve; its shape is kept and its slope ratio starts at 1.
        memory: Number of recent passes that carry most of the weight.
        prior_passes: Weight of the measured slope, in passes whose sizes spread by
            :attr:`SPREAD`. The fitted ratio moves away from 1 only as observed sizes spread
            enough to fix a slope.

    Thread-safe: concurrent requests of one generator observe into one model.
    """

    MIN_RATIO = 0.25
    MAX_RATIO = 4.0
    SPREAD = 0.1
    """Spread of ``c(n) - 1`` over which one pass counts fully toward the fitted slope."""

    def __init__(
        self, measured: CostModel, memory: float = 256.0, prior_passes: float = 16.0
    ) -> None:
        if memory < 1 or prior_passes < 0:
            raise ValueError(
                f"memory must be at least 1 and prior_passes at least 0, got {memory} and "
                f"{prior_passes}"
            )
        self.measured = measured
        self._decay = 1.0 - 1.0 / memory
        self._prior_passes = prior_passes
        self._sums = [0.0] * 5  # weight, sum x, sum y, sum x^2, sum x*y
        self._ratio = 1.0
        self._intercept: float | None = None
        self._lock = threading.Lock()

    def __call__(self, tokens: int) -> float:
        """Return the cost of a forward pass over ``tokens`` tokens, relative to one token."""
        return 1.0 + self._ratio * (self.measured(tokens) - 1.0)

    @property
    def max_tokens(self) -> int:
        return self.measured.max_tokens

    @property
    def observed_passes(self) -> float:
        """Number of passes observed, each weighted down by the passes after it."""
        return self._sums[0]

    @property
    def ratio(self) -> float:
        """Current ``B / A``: 1 reproduces the measured curve, 2 doubles its slope."""
        return self._ratio

    def observe(self, tokens: int, seconds: float) -> None:
        """Add the wall time of one forward pass over ``tokens`` tokens."""
        if not math.isfinite(seconds) or seconds <= 0:
            return
        x = self.measured(tokens) - 1.0
        with self._lock:
            if self._intercept is not None:
                predicted = self._intercept * (1.0 + self._ratio * x)
                seconds = min(max(seconds, predicted / 1.5), 1.5 * predicted)
            sums = [value * self._decay for value in self._sums]
            for i, term in enumerate((1.0, x, seconds, x * x, x * seconds)):
                sums[i] += term
            self._sums = sums
            self._ratio = self._fit()

    def _fit(self) -> float:
        weight, sum_x, sum_y, sum_xx, sum_xy = self._sums
        mean_x, mean_y = sum_x / weight, sum_y / weight
        variance = sum_xx / weight - mean_x * mean_x
        if variance <= 1e-12:
            return self._ratio
        slope = (sum_xy / weight - mean_x * mean_y) / variance
        intercept = mean_y - slope * mean_x
        if intercept <= 0:
            return self._ratio
        self._intercept = intercept
        fitted = min(max(slope / intercept, self.MIN_RATIO), self.MAX_RATIO)
        # Passes of one size fix no slope; weight the fit by how far the sizes spread.
        evidence = weight * variance / (self.SPREAD * self.SPREAD)
        return (evidence * fitted + self._prior_passes) / (evidence + self._prior_passes)
