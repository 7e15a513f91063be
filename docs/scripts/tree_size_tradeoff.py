"""Measure what bigger draft trees than the cost model's choice give: tokens per step and speed.

Usage (from the repository root, with the project installed):

    OMP_NUM_THREADS=2 python docs/scripts/tree_size_tradeoff.py --dataset specbench-summarization \
        --limit 20 --output docs/results/tree-size-tradeoff-summarization.json

The generator sizes every tree to maximize expected tokens per unit of forward cost, using the
cost curve ``c(n)`` of a pass over ``n`` tokens relative to one. This script runs the reader
with that curve and with its slope scaled down (``1 + s (c(n) - 1)`` for each ``--scales``
entry ``s``), which makes every tree look cheaper and so makes the drafted trees bigger. Each
prompt runs plain greedy ``generate`` of ``transformers`` first, as the reference, then every
scale in a rotating order. Every scale keeps its own drafting state (calibrator, recycling
table, response history) and its own online cost fit, so the scales learn side by side as if
each ran alone, in one process on the same prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reader_rag import GenerationConfig, ReaderGenerator
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.cost_model import AdaptiveCostModel
from reader_rag.evaluation.bench import encode_prompts
from reader_rag.evaluation.datasets import load_dataset


class ScaledCost(AdaptiveCostModel):
    """The generator's online cost fit with the slope multiplied by ``scale``."""

    def __init__(self, measured, scale: float) -> None:
        super().__init__(measured)
        self.scale = scale

    def __call__(self, tokens: int) -> float:
        return 1.0 + self.scale * (super().__call__(tokens) - 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="specbench-summarization")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--scales", default="1.0,0.7,0.5")
    parser.add_argument("--output")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]

    generator = ReaderGenerator.from_pretrained()
    prompts = load_dataset(args.dataset, limit=args.limit)
    encoded = encode_prompts(generator, prompts)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    model = generator.model

    def greedy(prompt_ids: list[int]) -> tuple[list[int], float]:
        input_ids = torch.tensor([prompt_ids], device=generator.device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=args.max_new_tokens, do_sample=False,
            )
        return output[0, len(prompt_ids) :].tolist(), time.perf_counter() - start

    greedy(encoded[0][0][:64])
    generator.generate_ids(encoded[0][0], [], GenerationConfig(max_new_tokens=4))
    generator.forget_drafted_text()
    start_state = generator.drafting_state()
    calibrator_state = generator.calibrator.state()

    settings = {}
    for scale in scales:
        calibrator = AcceptanceCalibrator()
        calibrator.restore(calibrator_state)
        settings[scale] = {
            "calibrator": calibrator,
            "state": start_state,
            "cost": ScaledCost(generator.cost_model, scale),
            "tokens": 0, "seconds": 0.0, "passes": 0, "identical": 0,
        }
    reference_tokens = reference_seconds = 0.0

    for i, (prompt_ids, document_ids) in enumerate(encoded):
        reference, seconds = greedy(prompt_ids)
        reference_tokens += len(reference)
        reference_seconds += seconds
        order = scales[i % len(scales) :] + scales[: i % len(scales)]
        for scale in order:
            setting = settings[scale]
            generator.calibrator = setting["calibrator"]
            generator.restore_drafting_state(setting["state"])
            generator._step_cost = setting["cost"]
            result = generator.generate_ids(prompt_ids, document_ids, config)
            setting["state"] = generator.drafting_state()
            setting["tokens"] += result.stats.new_tokens
            setting["seconds"] += result.stats.total_time_s
            setting["passes"] += result.stats.forward_passes
            setting["identical"] += int(result.token_ids == reference)
        print(f"prompt {i + 1}/{len(encoded)} done", flush=True)

    greedy_rate = reference_tokens / reference_seconds
    report = {
        "dataset": args.dataset,
        "prompts": len(encoded),
        "max_new_tokens": args.max_new_tokens,
        "threads": torch.get_num_threads(),
        "greedy_tokens_per_second": greedy_rate,
        "scales": [
            {
                "cost_slope_scale": scale,
                "tokens_per_second": s["tokens"] / s["seconds"],
                "speedup_vs_greedy": s["tokens"] / s["seconds"] / greedy_rate,
                "tokens_per_step": s["tokens"] / s["passes"],
                "identical_rate": s["identical"] / len(encoded),
                "fitted_slope_ratio_at_end": s["cost"].ratio,
            }
            for scale, s in settings.items()
        ],
    }
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
