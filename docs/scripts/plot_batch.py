"""Draw batch throughput by batch size from the batch benchmark reports.

Usage (from the repository root):

    python docs/scripts/plot_batch.py

Reads ``docs/results/bench-batch*-fp32.json`` and, for batch size 1, the ``greedy`` and
``reader`` rows of ``docs/results/bench-rag-fp32.json``, and writes
``docs/img/batch-throughput.svg``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path("docs/results")
FIGURE = Path("docs/img/batch-throughput.svg")


def read_points() -> list[tuple[int, float, float]]:
    """Return (batch size, Hugging Face tokens/s, reader_rag tokens/s), sorted by batch size."""
    points = []
    single = json.loads((RESULTS / "bench-rag-fp32.json").read_text())["methods"]
    points.append((1, single["greedy"]["tokens_per_second"], single["reader"]["tokens_per_second"]))
    for path in RESULTS.glob("bench-batch*-fp32.json"):
        size = int(re.search(r"batch(\d+)", path.name).group(1))
        methods = json.loads(path.read_text())["methods"]
        points.append(
            (size, methods["hf_batch"]["tokens_per_second"], methods["reader"]["tokens_per_second"])
        )
    return sorted(points)


def main() -> None:
    points = read_points()
    sizes = [p[0] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(sizes, [p[1] for p in points], "o-", label="Hugging Face generate")
    left.plot(sizes, [p[2] for p in points], "s-", label="reader_rag")
    left.set_xscale("log", base=2)
    left.set_xticks(sizes, [str(s) for s in sizes])
    left.set_xlabel("batch size")
    left.set_ylabel("new tokens per second")
    left.legend()
    ratios = [p[2] / p[1] for p in points]
    right.bar([str(s) for s in sizes], ratios, color="tab:green")
    right.axhline(1.0, color="black", linewidth=0.8)
    right.set_xlabel("batch size")
    right.set_ylabel("reader_rag / Hugging Face")
    for x, ratio in enumerate(ratios):
        right.text(x, ratio + 0.02, f"{ratio:.2f}", ha="center")
    figure.suptitle("SmolLM2-135M float32, 2 CPU threads, Spec-Bench RAG, 128 new tokens")
    figure.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(FIGURE, metadata={"Date": None})
    print(f"wrote {FIGURE}")


if __name__ == "__main__":
    main()
