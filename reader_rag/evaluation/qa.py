"""Question-answering evaluation: answer quality, retrieval quality and decoding speed in one run.

``run_qa_eval`` answers each question twice on the same prompt: with this library's speculative
decoding (``ReaderGenerator.generate_batch``) and with a plain baseline (Hugging Face greedy
``generate``, or this library's loop with ``speculative=False``). It scores the speculative
answers against the NQ-open gold answers and reports the speedup, the share of answers identical
to the baseline and the tokens per forward pass.

Prompts come from one of two places:

- ``given``: the Spec-Bench prompt unchanged (its five passages, then the question), with the
  passages as draft documents. This is the prompt that ``reader-rag bench`` runs.
- a ``DocumentStore``: the top ``k`` chunks retrieved for the question, in the template of
  ``build_rag_messages``, with all retrieved chunks as draft documents.

When the store holds the Spec-Bench passages (built with ``--specbench-passages``), retrieval
quality is measured too: recall@k and hit@k of each question's own five passages.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reader_rag.config import GenerationConfig
from reader_rag.evaluation.datasets import BenchmarkPrompt
from reader_rag.evaluation.metrics import exact_match, f1_score, markdown_table, normalize_answer

__all__ = [
    "BASELINES",
    "QAPrompt",
    "contains_answer",
    "format_qa_summary",
    "given_prompts",
    "parse_retrieval",
    "passages_by_question",
    "retrieval_quality",
    "run_qa_eval",
    "score_answer",
    "store_prompts",
]

logger = logging.getLogger(__name__)

BASELINES = ("greedy", "plain")
"""``greedy``: Hugging Face ``model.generate`` with greedy decoding, one prompt at a time.
``plain``: this library's loop without speculation, in the same batches as the reader."""

WARM_UP_TOKENS = 4


@dataclass(frozen=True)
class QAPrompt:
    """One question ready to generate.

    Attributes:
        question_id: Spec-Bench ``question_id``.
        question: The question text.
        gold_answers: NQ-open answers; empty when the question has none, so it is not scored.
        messages: Chat messages of the prompt.
        documents: Draft documents of the request.
        retrieved_sources: ``Chunk.source`` of each retrieved chunk, best first; empty for
            ``given`` prompts.
        included: Retrieved chunks that fit in the prompt (the first ``included`` sources).
    """

    question_id: int
    question: str
    gold_answers: tuple[str, ...]
    messages: list[dict[str, str]]
    documents: tuple[str, ...]
    retrieved_sources: tuple[str, ...] = ()
    included: int = 0


@dataclass
class _Totals:
    """Sums over prompts for one method."""

    new_tokens: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    draft_seconds: float = 0.0
    accepted_by_source: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        data = {
            "tokens_per_second": self.new_tokens / self.seconds if self.seconds else 0.0,
            "tokens_per_step": (
                self.new_tokens / self.forward_passes if self.forward_passes else None
            ),
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "forward_passes": self.forward_passes,
        }
        if self.draft_seconds:
            data["draft_time_share"] = self.draft_seconds / self.seconds
        if self.accepted_by_source:
            data["accepted_by_source"] = dict(sorted(self.accepted_by_source.items()))
        return data


# Prompts


def parse_retrieval(value: str) -> tuple[str, Path | None]:
    """Parse a ``--retrieval`` value: ``given`` or ``store:PATH``.

    Returns ``("given", None)`` or ``("store", Path(PATH))``.

    Raises:
        ValueError: any other value, or ``store:`` without a path.
    """
    if value == "given":
        return "given", None
    if value.startswith("store:"):
        path = value[len("store:") :]
        if not path:
            raise ValueError(
                "--retrieval store: needs the store folder after the colon, e.g. "
                "store:stores/wiki"
            )
        return "store", Path(path)
    raise ValueError(
        f"--retrieval must be 'given' or 'store:PATH', got {value!r}"
    )


def given_prompts(prompts: Sequence[BenchmarkPrompt]) -> list[QAPrompt]:
    """Return the Spec-Bench prompts unchanged, with their passages as draft documents."""
    check_rag_prompts(prompts)
    return [
        QAPrompt(
            question_id=prompt.question_id,
            question=prompt.question,
            gold_answers=prompt.gold_answers,
            messages=[{"role": "user", "content": prompt.prompt}],
            documents=prompt.passages,
        )
        for prompt in prompts
    ]


def store_prompts(
    prompts: Sequence[BenchmarkPrompt],
    store,
    tokenizer,
    max_prompt_tokens: int,
    k: int = 4,
) -> list[QAPrompt]:
    """Retrieve the top ``k`` chunks of ``store`` for each question and build its prompt.

    ``store`` is a ``DocumentStore``. Chunks go into the prompt while it stays within
    ``max_prompt_tokens`` tokens, and all ``k`` are draft documents.
    """
    from reader_rag.pipeline import retrieve_prompts

    check_rag_prompts(prompts)
    retrieved = retrieve_prompts(
        store, [prompt.question for prompt in prompts], tokenizer, max_prompt_tokens, k
    )
    return [
        QAPrompt(
            question_id=prompt.question_id,
            question=prompt.question,
            gold_answers=prompt.gold_answers,
            messages=found.messages,
            documents=tuple(found.documents),
            retrieved_sources=tuple(result.chunk.source for result in found.results),
            included=found.included,
        )
        for prompt, found in zip(prompts, retrieved)
    ]


def check_rag_prompts(prompts: Sequence[BenchmarkPrompt]) -> None:
    """Raise ValueError unless every prompt has a question (the ``rag`` category)."""
    for prompt in prompts:
        if prompt.question is None:
            raise ValueError(
                f"Spec-Bench prompt {prompt.question_id} ({prompt.category}) has no question; "
                "the QA evaluation runs on --dataset specbench-rag"
            )


# Scores


def contains_answer(prediction: str, gold_answers: Sequence[str]) -> float:
    """Return 1.0 if a normalized gold answer occurs as whole words in the normalized prediction.

    A generative model often answers in a sentence, which scores 0 exact match even when the
    answer is in it; this score counts such answers. Gold answers that normalize to nothing are
    ignored.
    """
    text = f" {normalize_answer(prediction)} "
    for gold in gold_answers:
        normalized = normalize_answer(gold)
        if normalized and f" {normalized} " in text:
            return 1.0
    return 0.0


def score_answer(prediction: str, gold_answers: Sequence[str]) -> dict[str, float] | None:
    """Return exact match, F1 and contains-answer of one prediction, or None without gold answers."""
    if not gold_answers:
        return None
    return {
        "exact_match": exact_match(prediction, gold_answers),
        "f1": f1_score(prediction, gold_answers),
        "contains_answer": contains_answer(prediction, gold_answers),
    }


def mean_scores(scores: Sequence[Mapping[str, float] | None]) -> dict[str, Any]:
    """Average the non-None score dicts; the means are None when no prompt was scored."""
    scored = [score for score in scores if score is not None]
    names = ("exact_match", "f1", "contains_answer")
    if not scored:
        return {**dict.fromkeys(names), "n_scored": 0}
    means = {name: sum(score[name] for score in scored) / len(scored) for name in names}
    return {**means, "n_scored": len(scored)}


# Retrieval quality


def passages_by_question(chunks) -> dict[int, set[str]]:
    """Map each Spec-Bench question id to the sources of the store chunks from its passages.

    Chunks are recognized by the ``question_ids`` metadata that ``load_specbench_documents``
    writes; chunks of other documents are ignored.
    """
    owners: dict[int, set[str]] = {}
    for chunk in chunks:
        question_ids = chunk.metadata.get("question_ids")
        if not isinstance(question_ids, list):
            continue
        for question_id in question_ids:
            owners.setdefault(int(question_id), set()).add(chunk.source)
    return owners


def retrieval_quality(
    retrieved: Mapping[int, Sequence[str]], owners: Mapping[int, set[str]], k: int
) -> dict[str, Any] | None:
    """Return recall@k and hit@k of each question's own passages, or None when not measurable.

    ``retrieved`` maps each question id to the sources of its retrieved chunks, best first.
    recall@k is the share of a question's own passages among its top ``k`` results, averaged
    over questions. With five passages per question and ``k=4`` it is at most 0.8. hit@k is the
    share of questions with at least one own passage in the top ``k``. Both need every
    question's passages in the store (``owners`` from ``passages_by_question``), so None is
    returned when a question has none there.
    """
    if not retrieved or any(question_id not in owners for question_id in retrieved):
        return None
    recalls = []
    hits = []
    for question_id, sources in retrieved.items():
        own = owners[question_id]
        found = own.intersection(sources[:k])
        recalls.append(len(found) / len(own))
        hits.append(1.0 if found else 0.0)
    return {
        "recall_at_k": sum(recalls) / len(recalls),
        "hit_at_k": sum(hits) / len(hits),
        "questions": len(retrieved),
    }


# Generation


def run_reader(generator, batch: Sequence[QAPrompt], config: GenerationConfig):
    """Generate one batch with speculative decoding; return the results and the wall time."""
    return _timed_batch(generator, batch, config, speculative=True)


def run_plain(generator, batch: Sequence[QAPrompt], config: GenerationConfig):
    """Generate one batch with this library's loop without speculation."""
    return _timed_batch(generator, batch, config, speculative=False)


def _timed_batch(generator, batch, config, speculative: bool):
    start = time.perf_counter()
    results = generator.generate_batch(
        [list(prompt.messages) for prompt in batch],
        [list(prompt.documents) for prompt in batch],
        configs=config,
        speculative=speculative,
    )
    return results, time.perf_counter() - start


def run_hf_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], float]:
    """Run Hugging Face greedy ``generate`` on one prompt; return the new ids and the seconds."""
    input_ids = torch.tensor([prompt_ids], device=model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
    return output[0, len(prompt_ids) :].tolist(), time.perf_counter() - start


def run_baseline(generator, batch, config, baseline: str) -> tuple[list[list[int]], float, int]:
    """Run the baseline on one batch; return its output ids, seconds and forward passes.

    ``greedy`` decodes one prompt at a time with Hugging Face ``generate``, so its forward
    passes are counted as one per new token (prefill included). ``plain`` runs the batch with
    ``speculative=False``.
    """
    if baseline == "plain":
        results, seconds = run_plain(generator, batch, config)
        passes = sum(result.stats.forward_passes for result in results)
        return [result.token_ids for result in results], seconds, passes
    outputs = []
    seconds = 0.0
    for prompt in batch:
        ids, elapsed = run_hf_greedy(
            generator.model, generator.encode_prompt(prompt.messages), config.max_new_tokens
        )
        outputs.append(ids)
        seconds += elapsed
    return outputs, seconds, sum(len(ids) for ids in outputs)


def warm_up(generator, prompt: QAPrompt, baseline: str, batch_size: int = 1) -> None:
    """Run both methods once on a few tokens and measure the cost curves of batches up to
    ``batch_size``, so one-time costs do not land on the first batch."""
    short = GenerationConfig(max_new_tokens=WARM_UP_TOKENS)
    run_reader(generator, [prompt], short)
    run_baseline(generator, [prompt], short, baseline)
    generator.measure_costs(batch_size)
    # The warm-up ran on the first prompt, so what it recorded must not help its measured run.
    generator.forget_drafted_text()


def batches(items: Sequence, size: int) -> list[Sequence]:
    """Split ``items`` into consecutive batches of ``size`` (the last may be shorter)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def run_qa_eval(
    generator,
    prompts: Sequence[BenchmarkPrompt],
    *,
    store=None,
    k: int = 4,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    datastore: bool | None = None,
    baseline: str = "greedy",
    progress: bool = True,
) -> dict[str, Any]:
    """Answer every prompt with the reader and the baseline; return the report as a JSON-ready dict.

    Args:
        generator: A ``ReaderGenerator``. Its ``datastore`` attribute is set for the run and
            restored afterwards.
        prompts: Spec-Bench ``rag`` prompts (``load_dataset("specbench-rag")``).
        store: A ``DocumentStore`` to retrieve from, or None for the prompts as given.
        k: Chunks retrieved per question.
        batch_size: Prompts that the reader, and the ``plain`` baseline, decode together in
            one ``generate_batch`` call; 1 decodes one prompt at a time. The ``greedy``
            baseline always decodes one prompt at a time.
        max_new_tokens: Output tokens per answer.
        datastore: Draft from the store's corpus datastore. None means on when ``store`` has
            one that fits the model's tokenizer. True without a store raises.
        baseline: One of ``BASELINES``.
        progress: Show a progress bar that advances once per batch.

    The report has ``exact_match``, ``f1``, ``contains_answer`` and ``n_scored``, computed over
    the questions with gold answers. ``speedup_vs_greedy`` is the reader's tokens per second
    over the baseline's, and ``identical_rate`` the share of answers whose token ids equal the
    baseline's. A method's tokens per second are its new tokens over the summed wall time of
    its generation calls (prefill included, retrieval and the warm-up run excluded), so with
    the ``greedy`` baseline and ``batch_size`` above 1 the speedup includes the gain of
    batching. ``tokens_per_step`` is the reader's new tokens per forward pass. The other keys
    are ``retrieval``, ``datastore``, ``reader``, ``baseline``, ``config`` and ``per_prompt``.

    Raises:
        ValueError: invalid ``k``, ``batch_size``, ``max_new_tokens`` or ``baseline``, no
            prompts, or ``datastore=True`` without a store.
    """
    validate_eval_settings(prompts, k, batch_size, max_new_tokens, baseline, store, datastore)
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    items, retrieval = prepare_prompts(generator, prompts, store, k, max_new_tokens)

    previous_datastore = generator.datastore
    try:
        datastore_info = attach_datastore(generator, store, datastore)
        warm_up(generator, items[0], baseline, batch_size)
        per_prompt, reader, base = generate_all(
            generator, items, config, batch_size, baseline, progress
        )
    finally:
        generator.datastore = previous_datastore

    reader_summary = reader.summary()
    base_summary = {"method": baseline, **base.summary()}
    speedup = (
        reader_summary["tokens_per_second"] / base_summary["tokens_per_second"]
        if base_summary["tokens_per_second"]
        else None
    )
    identical = [row["identical"] for row in per_prompt]
    scores = mean_scores([row["score"] for row in per_prompt])
    baseline_scores = mean_scores([row["baseline_score"] for row in per_prompt])
    return {
        "exact_match": scores["exact_match"],
        "f1": scores["f1"],
        "contains_answer": scores["contains_answer"],
        "n_scored": scores["n_scored"],
        "n_prompts": len(items),
        "speedup_vs_greedy": speedup,
        "identical_rate": sum(identical) / len(identical),
        "tokens_per_step": reader_summary["tokens_per_step"],
        "retrieval": retrieval,
        "datastore": datastore_info,
        "reader": reader_summary,
        "baseline": {
            **base_summary,
            "exact_match": baseline_scores["exact_match"],
            "f1": baseline_scores["f1"],
            "contains_answer": baseline_scores["contains_answer"],
        },
        "config": eval_config(generator, prompts, store, k, batch_size, max_new_tokens, baseline),
        "per_prompt": per_prompt,
    }


def validate_eval_settings(prompts, k, batch_size, max_new_tokens, baseline, store, datastore):
    """Raise ValueError naming the first invalid setting of ``run_qa_eval``."""
    if not prompts:
        raise ValueError("no prompts to evaluate; pass at least one Spec-Bench rag prompt")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer of at least 1, got {k!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, got {baseline!r}")
    if datastore and store is None:
        raise ValueError(
            "the corpus datastore needs a store; use --retrieval store:STORE or --datastore off"
        )


def prepare_prompts(generator, prompts, store, k, max_new_tokens):
    """Build the prompts and measure retrieval quality; return ``(items, retrieval)``."""
    from reader_rag.pipeline import prompt_budget

    if store is None:
        return given_prompts(prompts), {"mode": "given"}
    budget = prompt_budget(generator.max_positions, max_new_tokens)
    items = store_prompts(prompts, store, generator.tokenizer, budget, k)
    retrieved = {item.question_id: item.retrieved_sources for item in items}
    quality = retrieval_quality(retrieved, passages_by_question(store.chunks), k)
    retrieval = {
        "mode": "store",
        "store": str(store.path),
        "num_chunks": len(store),
        "embedder": store.manifest["embedder"],
        "index_type": store.manifest["index_type"],
        "k": k,
        "mean_chunks_in_prompt": sum(item.included for item in items) / len(items),
    }
    if quality is None:
        retrieval["quality"] = None
        retrieval["quality_note"] = (
            "not measured: the store does not hold the Spec-Bench passages of every question "
            "(build it with --specbench-passages)"
        )
    else:
        retrieval.update(quality)
    return items, retrieval


def attach_datastore(generator, store, requested: bool | None) -> dict[str, Any]:
    """Set ``generator.datastore`` for the run and describe the choice for the report."""
    from reader_rag.pipeline import datastore_mismatch, use_store_datastore

    setting = {None: "auto", True: "on", False: "off"}[requested]
    if store is None or requested is False:
        generator.datastore = None
        return {"requested": setting, "used": False}
    used = use_store_datastore(generator, store)
    info: dict[str, Any] = {"requested": setting, "used": used}
    if used:
        info["num_tokens"] = store.datastore.num_tokens
        info["tokenizer"] = store.datastore.tokenizer_id
    else:
        info["reason"] = datastore_mismatch(store, generator.tokenizer)
    return info


def generate_all(generator, items, config, batch_size, baseline, progress):
    """Run reader and baseline on every batch, alternating which runs first."""
    reader = _Totals()
    base = _Totals()
    per_prompt: list[dict[str, Any]] = []
    groups = batches(items, batch_size)
    bar = _progress_bar(len(items), progress)
    try:
        for number, batch in enumerate(groups):
            if number % 2 == 0:
                base_ids, base_seconds, base_passes = run_baseline(
                    generator, batch, config, baseline
                )
                results, seconds = run_reader(generator, batch, config)
            else:
                results, seconds = run_reader(generator, batch, config)
                base_ids, base_seconds, base_passes = run_baseline(
                    generator, batch, config, baseline
                )
            add_reader_totals(reader, results, seconds)
            base.new_tokens += sum(len(ids) for ids in base_ids)
            base.seconds += base_seconds
            base.forward_passes += base_passes
            for item, result, ids in zip(batch, results, base_ids):
                per_prompt.append(prompt_record(generator, item, result, ids))
            bar.update(len(batch))
            bar.set_postfix(batch=f"{number + 1}/{len(groups)}")
    finally:
        bar.close()
    return per_prompt, reader, base


def add_reader_totals(totals: _Totals, results, seconds: float) -> None:
    """Add one batch of reader results to ``totals``; ``seconds`` is the batch's wall time."""
    totals.seconds += seconds
    for result in results:
        stats = result.stats
        totals.new_tokens += stats.new_tokens
        totals.forward_passes += stats.forward_passes
        totals.draft_seconds += stats.draft_time_s
        for source, count in stats.accepted_by_source.items():
            totals.accepted_by_source[source] = totals.accepted_by_source.get(source, 0) + count


def prompt_record(generator, item: QAPrompt, result, baseline_ids: list[int]) -> dict[str, Any]:
    """Return the per-prompt entry of the report."""
    baseline_text = generator.tokenizer.decode(baseline_ids, skip_special_tokens=True)
    return {
        "question_id": item.question_id,
        "question": item.question,
        "gold_answers": list(item.gold_answers),
        "answer": result.text,
        "score": score_answer(result.text, item.gold_answers),
        "baseline_score": score_answer(baseline_text, item.gold_answers),
        "identical": result.token_ids == baseline_ids,
        "new_tokens": result.stats.new_tokens,
        "forward_passes": result.stats.forward_passes,
        "accepted_by_source": dict(result.stats.accepted_by_source),
        "retrieved_sources": list(item.retrieved_sources),
        "chunks_in_prompt": item.included,
    }


def eval_config(generator, prompts, store, k, batch_size, max_new_tokens, baseline) -> dict:
    """Return the settings and versions that the report was produced with."""
    from importlib.metadata import version

    return {
        "model": generator.name,
        "dtype": str(generator.dtype),
        "device": str(generator.device),
        "threads": torch.get_num_threads(),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "baseline": baseline,
        "k": k if store is not None else None,
        "prompts": len(prompts),
        "question_ids": [prompt.question_id for prompt in prompts],
        "draft": {name: value for name, value in vars(generator.draft).items()},
        "cost_curve": {str(n): generator.cost_model(n) for n in generator.draft.cost_points},
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="questions", unit="question", disable=not enabled)


# Terminal summary


def format_qa_summary(report: Mapping[str, Any]) -> str:
    """Return a Markdown summary of a ``run_qa_eval`` report: one table and a retrieval line."""
    reader = report["reader"]
    base = report["baseline"]
    rows = [
        {
            "method": "reader",
            "exact_match": report["exact_match"],
            "f1": report["f1"],
            "contains_answer": report["contains_answer"],
            "tokens_per_second": reader["tokens_per_second"],
            "speedup_vs_greedy": report["speedup_vs_greedy"],
            "identical_rate": report["identical_rate"],
            "tokens_per_step": reader["tokens_per_step"],
        },
        {
            "method": f"baseline ({base['method']})",
            "exact_match": base["exact_match"],
            "f1": base["f1"],
            "contains_answer": base["contains_answer"],
            "tokens_per_second": base["tokens_per_second"],
            "speedup_vs_greedy": 1.0,
            "identical_rate": 1.0,
            "tokens_per_step": base["tokens_per_step"],
        },
    ]
    columns = [
        "method", "exact_match", "f1", "contains_answer", "tokens_per_second",
        "speedup_vs_greedy", "identical_rate", "tokens_per_step",
    ]
    lines = [
        markdown_table(rows, columns),
        "",
        f"{report['n_scored']} of {report['n_prompts']} questions have gold answers and are scored.",
        describe_retrieval(report["retrieval"]),
        describe_datastore(report["datastore"]),
    ]
    return "\n".join(lines)


def describe_retrieval(retrieval: Mapping[str, Any]) -> str:
    """Return one line about where the prompts' passages came from and how good they were."""
    if retrieval["mode"] == "given":
        return "Retrieval: the passages given in each Spec-Bench prompt."
    line = (
        f"Retrieval: top {retrieval['k']} of {retrieval['num_chunks']} chunks in "
        f"{retrieval['store']}, {retrieval['mean_chunks_in_prompt']:.2f} per prompt on average"
    )
    if "recall_at_k" in retrieval:
        k = retrieval["k"]
        line += (
            f"; recall@{k} {retrieval['recall_at_k']:.3f}, hit@{k} {retrieval['hit_at_k']:.3f} "
            "of the questions' own Spec-Bench passages"
        )
    return line + "."


def describe_datastore(info: Mapping[str, Any]) -> str:
    """Return one line about the corpus datastore of the run."""
    if info["used"]:
        return f"Corpus datastore: on ({info['num_tokens']} tokens)."
    if info.get("reason"):
        return f"Corpus datastore: off ({info['reason']})."
    return "Corpus datastore: off."

