"""Split the time of single-request decoding steps into their parts.

Usage (from the repository root, with the project installed):

    OMP_NUM_THREADS=2 python docs/scripts/profile_step.py --limit 6 --output docs/results/step-profile.json

Runs the reader on the first ``--limit`` Spec-Bench RAG prompts twice. The first run uses the
attention and drafting of earlier versions: ``transformers`` SDPA, no token recycling and no
response history. The second uses the defaults. The report gives milliseconds per decoding step
for each part, prefill left out. The parts are timed by wrapping the functions that do them, so they add a few
microseconds of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import defaultdict

import torch

import reader_rag.generation.generator as generator_module
from reader_rag import GenerationConfig, ReaderGenerator
from reader_rag.drafting.recycling import RecyclingTable
from reader_rag.evaluation.bench import encode_prompts
from reader_rag.evaluation.datasets import load_dataset
from reader_rag.models import GROUPED_SDPA


class Timers:
    """Seconds per named part, summed over calls made outside the prefill."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.in_prefill = False

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if not self.in_prefill:
                    self.seconds[name] += time.perf_counter() - start

        return timed

    def wrap_prefill(self, function):
        def prefill(*args, **kwargs):
            self.in_prefill = True
            try:
                return function(*args, **kwargs)
            finally:
                self.in_prefill = False

        return prefill

    def time_module(self, module: torch.nn.Module, name: str) -> list:
        """Add the forward time of ``module`` to ``name``; return the hook handles."""
        started = {}

        def before(*_):
            started["t"] = time.perf_counter()

        def after(*_):
            if not self.in_prefill:
                self.seconds[name] += time.perf_counter() - started["t"]

        return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


def profile(generator: ReaderGenerator, encoded, config: GenerationConfig) -> dict:
    timers = Timers()
    model = generator.model
    labels = {
        (generator_module, "tree_attention_inputs"): "mask building",
        (generator_module, "walk_tree"): "acceptance walk",
        (generator_module, "commit_kv"): "cache commit",
        (RecyclingTable, "update"): "recycling update",
        (generator, "_draft"): "drafting",
        (model, "forward"): "model forward",
    }
    originals = [(owner, name, getattr(owner, name)) for owner, name in labels]

    hooks = timers.time_module(model.lm_head, "  LM head (inside forward)")
    for layer in model.model.layers:
        hooks += timers.time_module(layer.self_attn, "  attention (inside forward)")

    steps = tokens = 0
    prefill = total = 0.0
    try:
        for owner, name, function in originals:
            setattr(owner, name, timers.wrap(labels[(owner, name)], function))
        generator._prefill = timers.wrap_prefill(generator._prefill)
        for prompt_ids, document_ids in encoded:
            result = generator.generate_ids(prompt_ids, document_ids, config)
            steps += result.stats.forward_passes - 1
            tokens += result.stats.new_tokens - 1
            prefill += result.stats.prefill_time_s
            total += result.stats.total_time_s
    finally:
        for owner, name, function in originals:
            if owner is model or owner is generator:
                delattr(owner, name)
            else:
                setattr(owner, name, function)
        del generator._prefill
        for hook in hooks:
            hook.remove()

    decode = total - prefill
    parts = dict(timers.seconds)
    parts["other Python"] = decode - sum(v for k, v in parts.items() if not k.startswith("  "))
    return {
        "steps": steps,
        "tokens_per_step": tokens / steps,
        "decode_seconds": decode,
        "ms_per_step": {k: round(1000 * v / steps, 3) for k, v in sorted(parts.items())},
        "ms_per_token": round(1000 * decode / tokens, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--output")
    args = parser.parse_args()

    generator = ReaderGenerator.from_pretrained()
    prompts = load_dataset("specbench-rag", limit=args.limit)
    encoded = encode_prompts(generator, prompts)
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    default_draft = generator.draft
    earlier_draft = dataclasses.replace(default_draft, recycle_width=0, history_tokens=0)
    history = generator.history

    report = {"threads": torch.get_num_threads(), "prompts": args.limit}
    for label, attention, draft in (
        ("before", "sdpa", earlier_draft),
        ("after", GROUPED_SDPA, default_draft),
    ):
        generator.model.set_attn_implementation(attention)
        generator.draft = draft
        generator.history = history if draft.history_tokens else None
        generator._cost_model = None  # each attention has its own cost curve
        generator.generate_ids(encoded[0][0], [], GenerationConfig(max_new_tokens=4))
        generator.recycling.clear()
        if history is not None:
            history.clear()
        report[label] = profile(generator, encoded, config)
    text = json.dumps(report, indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
