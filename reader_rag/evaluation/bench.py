"""Side-by-side speed benchmark of decoding methods on the same prompts, in one process.

Methods:

* ``greedy``: Hugging Face ``generate`` with greedy decoding, the reference.
* ``pld``: ``generate`` with prompt lookup decoding (``prompt_lookup_num_tokens=10``).
* ``plain``: this library's loop without speculation; separates loop overhead from drafting.
* ``reader``: this library, drafting from the prompt's passages, the prompt and the output.
* ``oracle``: this library's verifier drafting the true greedy continuation as a chain, sized by
  the cost model as if every node were accepted: the ceiling for any drafter.

All methods run on each prompt before the next prompt starts, in an order that rotates from
prompt to prompt, so that machine noise spreads evenly over the methods. Absolute times on a
shared machine mean little; the ratios are the result.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from reader_rag.config import GenerationConfig
from reader_rag.evaluation.datasets import BenchmarkPrompt
from reader_rag.generation.generator import ReaderGenerator

__all__ = ["METHODS", "MethodTotals", "encode_prompts", "run_batch_benchmark", "run_benchmark"]

logger = logging.getLogger(__name__)

METHODS = ("greedy", "pld", "plain", "reader", "oracle")
PROMPT_LOOKUP_TOKENS = 10


@dataclass
class MethodTotals:
    """Sums over prompts for one method."""

    new_tokens: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    identical: int = 0
    prompts: int = 0
    draft_seconds: float = 0.0
    prefill_seconds: float = 0.0
    accepted_by_source: dict[str, int] = field(default_factory=dict)
    per_prompt: list[dict] = field(default_factory=list)

    def summary(self, greedy_tokens_per_second: float | None) -> dict:
        tokens_per_second = self.new_tokens / self.seconds if self.seconds else 0.0
        data = {
            "tokens_per_second": tokens_per_second,
            "speedup_vs_greedy": (
                tokens_per_second / greedy_tokens_per_second if greedy_tokens_per_second else None
            ),
            "identical_rate": self.identical / self.prompts if self.prompts else None,
            "tokens_per_step": self.new_tokens / self.forward_passes if self.forward_passes else None,
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "prompts": self.prompts,
        }
        if self.draft_seconds:
            data["draft_time_share"] = self.draft_seconds / self.seconds
        if self.prefill_seconds:
            data["prefill_time_share"] = self.prefill_seconds / self.seconds
        if self.accepted_by_source:
            data["accepted_by_source"] = dict(sorted(self.accepted_by_source.items()))
        return data


class _ForwardCounter:
    """Counts forward calls of the top-level model, whichever method drives it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.count = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


def encode_prompts(
    generator: ReaderGenerator, prompts: Sequence[BenchmarkPrompt]
) -> list[tuple[list[int], list[list[int]]]]:
    """Return (prompt ids, document ids) for each prompt, the prompt sent as one user message."""
    return [
        (
            generator.encode_prompt([{"role": "user", "content": p.prompt}]),
            generator.encode_documents(list(p.passages)),
        )
        for p in prompts
    ]


def run_benchmark(
    generator: ReaderGenerator,
    prompts: Sequence[BenchmarkPrompt],
    methods: Sequence[str],
    max_new_tokens: int,
    progress: bool = True,
) -> dict:
    """Run ``methods`` on every prompt and return the report as a JSON-ready dict.

    ``identical_rate`` compares each method's output ids with ``greedy``'s, so ``greedy`` always
    runs, first in the report, even when not requested.
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown benchmark methods {unknown}; choose from {', '.join(METHODS)}")
    order = ["greedy", *[m for m in METHODS if m in methods and m != "greedy"]]
    totals = {method: MethodTotals() for method in order}
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    model = generator.model

    encoded = encode_prompts(generator, prompts)
    _warm_up(generator, encoded[0][0], order)

    counter = _ForwardCounter(model)
    iterator = _progress(range(len(prompts)), progress)
    try:
        for i in iterator:
            prompt_ids, document_ids = encoded[i]
            reference = _run_greedy(model, prompt_ids, max_new_tokens, counter, totals["greedy"])
            totals["greedy"].identical += 1
            others = order[1:]
            shift = i % len(others) if others else 0
            for method in others[shift:] + others[:shift]:
                ids = _run_method(
                    method, generator, prompt_ids, document_ids, config, reference, counter,
                    totals[method],
                )
                totals[method].identical += int(ids == reference)
                totals[method].per_prompt[-1]["identical"] = ids == reference
            for method in order:
                totals[method].per_prompt[-1]["question_id"] = prompts[i].question_id
    finally:
        counter.remove()

    greedy_rate = totals["greedy"].summary(None)["tokens_per_second"]
    report = {
        "methods": {method: totals[method].summary(greedy_rate) for method in order},
        "config": {
            "model": generator.name,
            "dtype": str(generator.dtype),
            "device": str(generator.device),
            "threads": torch.get_num_threads(),
            "max_new_tokens": max_new_tokens,
            "prompts": len(prompts),
            "question_ids": [p.question_id for p in prompts],
            "methods": order,
            "prompt_lookup_num_tokens": PROMPT_LOOKUP_TOKENS,
            "draft": {
                k: v for k, v in vars(generator.draft).items() if not k.startswith("_")
            },
            "cost_curve": {str(n): generator.cost_model(n) for n in generator.draft.cost_points},
            "cost_slope_ratio_at_end": generator.step_cost.ratio,
            "torch": torch.__version__,
            "transformers": _version("transformers"),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
        },
        "per_prompt": {method: totals[method].per_prompt for method in order},
    }
    return report


def _warm_up(generator: ReaderGenerator, prompt_ids: list[int], methods: Sequence[str]) -> None:
    """Run each method once on a few tokens so one-time costs do not land on the first prompt."""
    short = GenerationConfig(max_new_tokens=4)
    with torch.inference_mode():
        generator.model.generate(
            torch.tensor([prompt_ids], device=generator.device), max_new_tokens=4, do_sample=False
        )
    generator.generate_ids(prompt_ids, [], short, speculative=True)
    generator.generate_ids(prompt_ids, [], short, speculative=False)
    if "pld" in methods:
        with torch.inference_mode():
            generator.model.generate(
                torch.tensor([prompt_ids], device=generator.device),
                max_new_tokens=4,
                do_sample=False,
                prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS,
            )
    # The warm-up ran on the first prompt, so what it recorded must not help its measured run.
    generator.forget_drafted_text()


def _run_greedy(model, prompt_ids, max_new_tokens, counter, totals: MethodTotals) -> list[int]:
    return _run_generate(model, prompt_ids, max_new_tokens, counter, totals, {})


def _run_generate(model, prompt_ids, max_new_tokens, counter, totals, extra) -> list[int]:
    input_ids = torch.tensor([prompt_ids], device=model.device)
    before = counter.count
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **extra,
        )
    seconds = time.perf_counter() - start
    ids = output[0, len(prompt_ids) :].tolist()
    _add(totals, len(ids), seconds, counter.count - before, 0.0)
    return ids


def _run_method(
    method, generator, prompt_ids, document_ids, config, reference, counter, totals
) -> list[int]:
    if method == "pld":
        return _run_generate(
            generator.model, prompt_ids, config.max_new_tokens, counter, totals,
            {"prompt_lookup_num_tokens": PROMPT_LOOKUP_TOKENS},
        )
    before = counter.count
    if method == "plain":
        result = generator.generate_ids(prompt_ids, document_ids, config, speculative=False)
    elif method == "reader":
        result = generator.generate_ids(prompt_ids, document_ids, config)
    else:  # oracle
        result = generator.generate_ids(prompt_ids, document_ids, config, oracle_ids=reference)
    stats = result.stats
    _add(totals, stats.new_tokens, stats.total_time_s, counter.count - before, stats.draft_time_s)
    totals.prefill_seconds += stats.prefill_time_s
    for source, count in stats.accepted_by_source.items():
        totals.accepted_by_source[source] = totals.accepted_by_source.get(source, 0) + count
    return result.token_ids


def _add(totals: MethodTotals, tokens: int, seconds: float, passes: int, draft: float) -> None:
    totals.new_tokens += tokens
    totals.seconds += seconds
    totals.forward_passes += passes
    totals.draft_seconds += draft
    totals.prompts += 1
    totals.per_prompt.append(
        {"new_tokens": tokens, "seconds": seconds, "forward_passes": passes}
    )


def _progress(iterable, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="prompts", unit="prompt")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run_batch_benchmark(
    generator: ReaderGenerator,
    prompts: Sequence[BenchmarkPrompt],
    batch_size: int,
    max_new_tokens: int,
    progress: bool = True,
) -> dict:
    """Compare ``generate_batch`` with Hugging Face batched greedy ``generate`` (left padding).

    Both run on the same batches, one after the other, in an order that alternates between
    batches. ``identical_rate`` compares each request's output ids with single-request greedy
    ``generate``, the reference that neither batch method may change; it is reported for the
    Hugging Face batch too, whose padding can change rounding. Memory is the KV cache at its
    peak in bytes, computed from tensor shapes: the filled slots for both methods, and for
    reader_rag also the allocated capacity, since its buffers grow by doubling.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    model = generator.model
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    encoded = encode_prompts(generator, prompts)
    _warm_up(generator, encoded[0][0], ["greedy"])
    generator.measure_costs(batch_size)
    references = []
    for prompt_ids, _ in _progress(encoded, progress):
        with torch.inference_mode():
            output = model.generate(
                torch.tensor([prompt_ids], device=model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
            )
        references.append(output[0, len(prompt_ids) :].tolist())

    totals = {"hf_batch": MethodTotals(), "reader": MethodTotals()}
    compaction_seconds = 0.0
    kv_peak = {"hf_batch": 0, "reader": 0}
    kv_allocated = 0
    entry_bytes = _kv_bytes_per_slot(model)
    batches = [range(i, min(i + batch_size, len(prompts))) for i in range(0, len(prompts), batch_size)]
    for number, batch in enumerate(_progress(batches, progress)):
        order = ["hf_batch", "reader"] if number % 2 == 0 else ["reader", "hf_batch"]
        for method in order:
            if method == "hf_batch":
                ids, seconds, slots = _hf_batch(generator, [encoded[i][0] for i in batch], max_new_tokens)
                kv_peak[method] = max(kv_peak[method], slots * len(batch) * entry_bytes)
            else:
                start = time.perf_counter()
                results = generator.generate_batch_ids(
                    [encoded[i][0] for i in batch], [encoded[i][1] for i in batch], config
                )
                seconds = time.perf_counter() - start
                ids = [r.token_ids for r in results]
                compaction_seconds += results[0].stats.compaction_time_s
                kv_peak[method] = max(
                    kv_peak[method], results[0].stats.peak_slots * len(batch) * entry_bytes
                )
                kv_allocated = max(
                    kv_allocated, results[0].stats.peak_capacity * len(batch) * entry_bytes
                )
                totals[method].forward_passes += sum(r.stats.forward_passes for r in results)
            totals[method].seconds += seconds
            totals[method].prompts += len(batch)
            for i, out in zip(batch, ids):
                totals[method].new_tokens += len(out)
                totals[method].identical += int(out == references[i])
    hf_rate = totals["hf_batch"].new_tokens / totals["hf_batch"].seconds
    report = {
        "methods": {
            name: {
                **{k: v for k, v in t.summary(hf_rate).items() if k != "speedup_vs_greedy"},
                "speedup_vs_hf_batch": (t.new_tokens / t.seconds) / hf_rate,
                "kv_cache_peak_bytes": kv_peak[name],
            }
            for name, t in totals.items()
        },
        "config": {
            "model": generator.name,
            "dtype": str(generator.dtype),
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "prompts": len(prompts),
            "question_ids": [p.question_id for p in prompts],
            "cost_slope_ratio_at_end": getattr(
                generator.batch_step_cost(batch_size), "ratio", 1.0
            ),
        },
    }
    report["methods"]["hf_batch"]["tokens_per_step"] = None  # not measured for generate
    report["methods"]["reader"]["kv_cache_allocated_bytes"] = kv_allocated
    report["methods"]["reader"]["compaction_time_share"] = (
        compaction_seconds / totals["reader"].seconds
    )
    return report


def _hf_batch(generator: ReaderGenerator, prompt_ids: list[list[int]], max_new_tokens: int):
    """Run Hugging Face batched greedy ``generate`` with left padding; return ids, seconds, slots."""
    model = generator.model
    pad = generator.tokenizer.pad_token_id
    if pad is None:
        pad = generator.tokenizer.eos_token_id
    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for b, ids in enumerate(prompt_ids):
        input_ids[b, width - len(ids) :] = torch.tensor(ids)
        attention[b, width - len(ids) :] = 1
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
    seconds = time.perf_counter() - start
    outputs = []
    eos = set(_eos_list(model))
    for row in output[:, width:].tolist():
        # Finished rows are padded after their EOS; cut there, as single-request decoding does.
        for i, token in enumerate(row):
            if token in eos:
                row = row[: i + 1]
                break
        outputs.append(row)
    return outputs, seconds, output.shape[1]


def _eos_list(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def _kv_bytes_per_slot(model) -> int:
    """Bytes of keys and values that one cached token takes in one batch row, all layers."""
    config = model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * heads * head_dim * element
