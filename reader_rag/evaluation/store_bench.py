"""Benchmarks of the document store and of drafting from its corpus datastore.

``run_store_benchmark`` builds the store of the Wikipedia intros and the Spec-Bench passages and
times each stage. The stages are loading the documents, chunking with embedding and FAISS
indexing, and building the corpus datastore, whose peak traced memory and size on disk are
measured too. Then it times loading the store and one query for each of the 80 Spec-Bench
questions.

``run_datastore_benchmark`` decodes the Spec-Bench prompts with the reader, once with the
store's corpus datastore as a second draft source and once without, next to Hugging Face greedy
decoding. ``draft_source_coverage`` replays the greedy outputs through the same draft sources
without the model, to show where the datastore could add a correct draft token that the
request index misses.

All times are wall-clock seconds in one process. On a shared machine the absolute values vary
from run to run, so compare the ratios within one report.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reader_rag.config import GenerationConfig
from reader_rag.evaluation.datasets import BenchmarkPrompt, load_dataset
from reader_rag.evaluation.metrics import markdown_table, percentile

__all__ = [
    "DATASTORE_SETTINGS",
    "draft_source_coverage",
    "format_datastore_summary",
    "format_store_summary",
    "parse_datastore_settings",
    "run_datastore_benchmark",
    "run_store_benchmark",
]

logger = logging.getLogger(__name__)

DATASTORE_SETTINGS = ("off", "on")
# Suffix lengths of the datastore lookup timing: the drafter's maximum match length.
LOOKUP_CONTEXT_TOKENS = 32
LOOKUP_SAMPLES_PER_PROMPT = 8
# Repetitions of the store load and of the pass over the 80 questions. On a shared machine a
# single pass can land on a busy moment, so the medians are taken over all repetitions.
REPEATS = 3


# Store build and query latency


def run_store_benchmark(
    out_dir: str | os.PathLike[str],
    *,
    threads: int = 2,
    k: int = 4,
    wiki_limit: int | None = None,
    model: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the Wikipedia + Spec-Bench store at ``out_dir`` and time building and querying it.

    Torch and FAISS use ``threads`` threads. The store is first built without a datastore,
    then the datastore is built in memory from the chunks (timed, with tracemalloc's peak), and
    finally ``DocumentStore.add([], datastore_tokenizer=...)`` writes the store with it, so the
    store at ``out_dir`` is complete when this returns. Returns the report as a JSON-ready dict.
    """
    import faiss

    from reader_rag.models import load_tokenizer
    from reader_rag.retrieval.corpora import load_specbench_documents, load_wiki_documents
    from reader_rag.retrieval.store import DocumentStore

    out_dir = Path(out_dir)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    load_before = os.getloadavg()
    report: dict[str, Any] = {}

    start = time.perf_counter()
    specbench = load_specbench_documents()
    wiki = load_wiki_documents(limit=wiki_limit)
    documents = specbench + wiki
    report["documents"] = {
        "specbench_passages": len(specbench),
        "wiki_intros": len(wiki),
        "total": len(documents),
        "load_s": time.perf_counter() - start,
    }

    start = time.perf_counter()
    store = DocumentStore.build(documents, out_dir, show_progress=progress)
    build_s = time.perf_counter() - start
    report["store_build"] = {
        "seconds": build_s,
        "chunks": len(store),
        "chunks_per_second": len(store) / build_s,
        "embedder": store.manifest["embedder"],
        "chunk_tokens": store.manifest["chunk_tokens"],
        "overlap_tokens": store.manifest["overlap_tokens"],
        "index_type": store.manifest["index_type"],
        "peak_rss_mib_after": peak_rss_mib(),
        "note": "chunking, embedding (most of the time) and FAISS indexing, without a datastore",
    }

    tokenizer = load_tokenizer(model)
    report["datastore_build"] = measure_datastore_build(store.chunks, tokenizer)

    start = time.perf_counter()
    store.add([], datastore_tokenizer=tokenizer, show_progress=progress)
    report["datastore_build"]["write_store_s"] = time.perf_counter() - start
    report["datastore_build"]["size_on_disk_mib"] = folder_mib(out_dir / "datastore")
    report["store_size_on_disk_mib"] = folder_mib(out_dir)

    report["store_load"] = measure_store_load(out_dir)
    report["queries"] = measure_query_latency(out_dir, k)
    report["datastore_lookup"] = measure_datastore_lookup(out_dir, tokenizer)
    report["machine"] = machine_info(threads, load_before)
    report["peak_rss_mib"] = peak_rss_mib()
    return report


def measure_datastore_build(chunks, tokenizer) -> dict[str, Any]:
    """Tokenize the chunks and build their datastore in memory; return times and memory.

    ``peak_traced_mib`` is tracemalloc's peak during the suffix-array build, which counts the
    numpy arrays. ``peak_rss_mib_after`` is the process's peak resident set since it started, so
    it also counts torch, the embedder and the tokenizer.
    """
    from reader_rag.index.datastore import CorpusDatastore
    from reader_rag.retrieval.embeddings import tokenizer_id

    start = time.perf_counter()
    texts = [chunk.text for chunk in chunks]
    token_id_lists = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    tokenize_s = time.perf_counter() - start

    tracemalloc.start()
    start = time.perf_counter()
    datastore = CorpusDatastore.build(
        token_id_lists, len(tokenizer), tokenizer_id=tokenizer_id(tokenizer)
    )
    suffix_array_s = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "tokenizer": datastore.tokenizer_id,
        "num_tokens": datastore.num_tokens,
        "token_dtype": str(datastore.tokens.dtype),
        "tokenize_s": tokenize_s,
        "suffix_array_s": suffix_array_s,
        "peak_traced_mib": peak / 2**20,
        "array_mib": (datastore.tokens.nbytes + datastore.suffix_array.nbytes) / 2**20,
        "peak_rss_mib_after": peak_rss_mib(),
    }


def measure_store_load(path: Path) -> dict[str, float]:
    """Time ``DocumentStore.load`` with and without hashing every file; medians of 3 loads."""
    from reader_rag.retrieval.store import DocumentStore

    timings: dict[str, list[float]] = {"verified_s": [], "unverified_s": []}
    for _ in range(REPEATS):
        for verify in (True, False):
            start = time.perf_counter()
            DocumentStore.load(path, verify=verify)
            key = "verified_s" if verify else "unverified_s"
            timings[key].append(time.perf_counter() - start)
    return {key: float(np.median(values)) for key, values in timings.items()}


def measure_query_latency(path: Path, k: int) -> dict[str, Any]:
    """Time one ``search`` per Spec-Bench question on a freshly loaded store, in 3 passes.

    Also times the query embedding alone and one ``search_batch`` of all questions, and
    measures recall@k and hit@k of each question's own passages.
    """
    from reader_rag.evaluation.qa import passages_by_question, retrieval_quality
    from reader_rag.retrieval.store import DocumentStore

    store = DocumentStore.load(path)
    prompts = load_dataset("specbench-rag")
    questions = [prompt.question for prompt in prompts]
    store.search(questions[0], k)  # loads the embedder and warms up both models

    search_ms = []
    embed_ms = []
    retrieved = {}
    for _ in range(REPEATS):
        for prompt in prompts:
            start = time.perf_counter()
            results = store.search(prompt.question, k)
            search_ms.append((time.perf_counter() - start) * 1e3)
            retrieved[prompt.question_id] = tuple(result.chunk.source for result in results)
        for question in questions:
            start = time.perf_counter()
            store.embedder.encode([question], normalize=store.manifest["normalize"])
            embed_ms.append((time.perf_counter() - start) * 1e3)
    start = time.perf_counter()
    store.search_batch(questions, k)
    batch_s = time.perf_counter() - start

    return {
        "queries": len(questions),
        "passes": REPEATS,
        "k": k,
        "search_ms": latency_summary(search_ms),
        "embed_ms": latency_summary(embed_ms),
        "search_batch_all_s": batch_s,
        "retrieval": retrieval_quality(retrieved, passages_by_question(store.chunks), k),
    }


def measure_datastore_lookup(path: Path, tokenizer) -> dict[str, Any] | None:
    """Time one drafting lookup (``longest_match`` + ``continuations``) in the store's datastore.

    Contexts are 32-token windows of the Spec-Bench prompts, 8 per prompt at evenly spaced
    ends, as the drafter would see them mid-generation.
    """
    from reader_rag.retrieval.store import DocumentStore

    datastore = DocumentStore.load(path, verify=False).datastore
    if datastore is None:
        return None
    lookup_us = []
    match_lengths = []
    for prompt in load_dataset("specbench-rag"):
        ids = tokenizer(prompt.prompt, add_special_tokens=False)["input_ids"]
        ends = np.linspace(LOOKUP_CONTEXT_TOKENS, len(ids), LOOKUP_SAMPLES_PER_PROMPT).astype(int)
        for end in ends:
            context = ids[max(0, end - LOOKUP_CONTEXT_TOKENS) : end]
            start = time.perf_counter()
            length, lo, hi = datastore.longest_match(context, LOOKUP_CONTEXT_TOKENS)
            datastore.continuations(lo, hi, length, 16, 64)
            lookup_us.append((time.perf_counter() - start) * 1e6)
            match_lengths.append(length)
    return {
        "lookups": len(lookup_us),
        "lookup_us": latency_summary(lookup_us),
        "mean_match_length": float(np.mean(match_lengths)),
        "note": "contexts come from the Spec-Bench prompts, whose passages are in the store, "
        "so matches are long",
    }


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """Return the median, p99, mean and max of ``values``."""
    return {
        "median": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": float(np.mean(values)),
        "max": float(np.max(values)),
    }


def peak_rss_mib() -> float:
    """Return the peak resident set size of this process so far, in MiB (Linux units)."""
    # NOTE: ru_maxrss is in KiB on Linux but in bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mib(path: Path) -> float:
    """Return the total size of the files below ``path``, in MiB."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 2**20


def machine_info(threads: int, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Return the machine description that a benchmark report carries."""
    from importlib.metadata import version

    return {
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": version("faiss-cpu"),
        "sentence_transformers": version("sentence-transformers"),
    }


def format_store_summary(report: Mapping[str, Any]) -> str:
    """Return a Markdown table of the stage timings of a ``run_store_benchmark`` report."""
    build = report["store_build"]
    datastore = report["datastore_build"]
    queries = report["queries"]
    rows = [
        {"measure": "documents (Spec-Bench passages + Wikipedia intros)",
         "value": report["documents"]["total"]},
        {"measure": "chunks", "value": build["chunks"]},
        {"measure": "store build without datastore (s)", "value": build["seconds"]},
        {"measure": "datastore tokens", "value": datastore["num_tokens"]},
        {"measure": "datastore tokenize (s)", "value": datastore["tokenize_s"]},
        {"measure": "datastore suffix array (s)", "value": datastore["suffix_array_s"]},
        {"measure": "datastore peak traced memory (MiB)", "value": datastore["peak_traced_mib"]},
        {"measure": "datastore size on disk (MiB)", "value": datastore["size_on_disk_mib"]},
        {"measure": "store size on disk (MiB)", "value": report["store_size_on_disk_mib"]},
        {"measure": "store load, hashes verified (s)", "value": report["store_load"]["verified_s"]},
        {"measure": "query latency median (ms)", "value": queries["search_ms"]["median"]},
        {"measure": "query latency p99 (ms)", "value": queries["search_ms"]["p99"]},
        {"measure": "process peak RSS (MiB)", "value": report["peak_rss_mib"]},
    ]
    quality = queries.get("retrieval")
    if quality:
        k = queries["k"]
        rows.append({"measure": f"recall@{k} of own passages", "value": quality["recall_at_k"]})
        rows.append({"measure": f"hit@{k} of own passages", "value": quality["hit_at_k"]})
    return markdown_table(rows, ["measure", "value"])


# Datastore on and off while decoding


def parse_datastore_settings(value: str) -> list[str]:
    """Parse ``--datastore`` (``on``, ``off`` or both, comma-separated) into a list in order.

    Raises:
        ValueError: an unknown or repeated setting, or none at all.
    """
    settings = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [setting for setting in settings if setting not in DATASTORE_SETTINGS]
    if not settings or unknown:
        raise ValueError(f"--datastore takes on, off or on,off; got {value!r}")
    if len(set(settings)) != len(settings):
        raise ValueError(f"--datastore lists a setting twice: {value!r}")
    return settings


@dataclass
class _SettingTotals:
    """Sums over prompts for one datastore setting."""

    new_tokens: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    draft_seconds: float = 0.0
    verify_seconds: float = 0.0
    drafted_nodes: int = 0
    identical: int = 0
    prompts: int = 0
    accepted_by_source: dict[str, int] = field(default_factory=dict)

    def add(self, result, identical: bool) -> None:
        stats = result.stats
        self.new_tokens += stats.new_tokens
        self.seconds += stats.total_time_s
        self.forward_passes += stats.forward_passes
        self.draft_seconds += stats.draft_time_s
        self.verify_seconds += stats.verify_time_s
        self.drafted_nodes += stats.drafted_nodes
        self.identical += int(identical)
        self.prompts += 1
        for source, count in stats.accepted_by_source.items():
            self.accepted_by_source[source] = self.accepted_by_source.get(source, 0) + count

    def summary(self, greedy_tokens_per_second: float) -> dict[str, Any]:
        tokens_per_second = self.new_tokens / self.seconds if self.seconds else 0.0
        steps = self.forward_passes - self.prompts  # drafting happens after each prefill
        return {
            "tokens_per_second": tokens_per_second,
            "speedup_vs_greedy": (
                tokens_per_second / greedy_tokens_per_second if greedy_tokens_per_second else None
            ),
            "identical_rate": self.identical / self.prompts if self.prompts else None,
            "tokens_per_step": (
                self.new_tokens / self.forward_passes if self.forward_passes else None
            ),
            "draft_time_share": self.draft_seconds / self.seconds if self.seconds else None,
            "draft_ms_per_step": self.draft_seconds * 1e3 / steps if steps > 0 else None,
            "verify_ms_per_step": self.verify_seconds * 1e3 / steps if steps > 0 else None,
            "drafted_nodes_per_step": self.drafted_nodes / steps if steps > 0 else None,
            "accepted_by_source": dict(sorted(self.accepted_by_source.items())),
            "new_tokens": self.new_tokens,
            "seconds": self.seconds,
            "forward_passes": self.forward_passes,
            "prompts": self.prompts,
        }


def run_datastore_benchmark(
    generator,
    prompts: Sequence[BenchmarkPrompt],
    datastore,
    settings: Sequence[str] = ("on", "off"),
    max_new_tokens: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode every prompt with greedy ``generate`` and with the reader per datastore setting.

    Each prompt is the Spec-Bench prompt as given, with its passages as draft documents, as in
    ``reader-rag bench``. Setting ``on`` sets ``generator.datastore`` to ``datastore``, ``off``
    to None, and the previous value is restored at the end. The settings run in an order that
    rotates from prompt to prompt. ``identical_rate`` compares each setting's output ids with
    greedy's. The report also has ``coverage`` from ``draft_source_coverage`` over the greedy
    outputs.

    Raises:
        ValueError: ``on`` is requested but ``datastore`` is None, or a setting is unknown.
    """
    from reader_rag.evaluation.qa import run_hf_greedy

    settings = list(settings)
    if any(setting not in DATASTORE_SETTINGS for setting in settings):
        raise ValueError(f"settings must be among {DATASTORE_SETTINGS}, got {settings}")
    if "on" in settings and datastore is None:
        raise ValueError("datastore setting 'on' needs a datastore; the store has none")
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    encoded = [
        (
            generator.encode_prompt([{"role": "user", "content": prompt.prompt}]),
            generator.encode_documents(list(prompt.passages)),
        )
        for prompt in prompts
    ]
    greedy_tokens = 0
    greedy_seconds = 0.0
    totals = {setting: _SettingTotals() for setting in settings}
    references = []
    per_prompt = []
    previous = generator.datastore
    try:
        warm_up_settings(generator, encoded[0][0], datastore, settings)
        for number in _progress(range(len(prompts)), progress):
            prompt_ids, document_ids = encoded[number]
            reference, seconds = run_hf_greedy(generator.model, prompt_ids, max_new_tokens)
            greedy_tokens += len(reference)
            greedy_seconds += seconds
            references.append(reference)
            shift = number % len(settings)
            row = {
                "question_id": prompts[number].question_id,
                "greedy_tokens": len(reference),
                "greedy_seconds": seconds,
                "greedy_ids": reference,
            }
            # Every setting starts from the drafting state left by the earlier prompts, so no
            # setting drafts from what the other one learned on this prompt.
            state = generator.drafting_state()
            for setting in settings[shift:] + settings[:shift]:
                generator.restore_drafting_state(state)
                generator.datastore = datastore if setting == "on" else None
                result = generator.generate_ids(prompt_ids, document_ids, config)
                totals[setting].add(result, result.token_ids == reference)
                row[setting] = {
                    "seconds": result.stats.total_time_s,
                    "new_tokens": result.stats.new_tokens,
                    "tokens_per_step": result.stats.tokens_per_step,
                    "drafted_nodes": result.stats.drafted_nodes,
                    "verify_time_s": result.stats.verify_time_s,
                    "identical": result.token_ids == reference,
                    "accepted_by_source": dict(result.stats.accepted_by_source),
                    "draft_time_s": result.stats.draft_time_s,
                }
            per_prompt.append(row)
    finally:
        generator.datastore = previous

    greedy_rate = greedy_tokens / greedy_seconds if greedy_seconds else 0.0
    summaries = {setting: totals[setting].summary(greedy_rate) for setting in settings}
    for setting in settings:
        summaries[setting]["median_prompt_speedup"] = median_prompt_speedup(per_prompt, setting)
    coverage = None
    if datastore is not None:
        coverage = draft_source_coverage(generator, encoded, references, datastore)
    return {
        "settings": summaries,
        "greedy": {
            "tokens_per_second": greedy_rate,
            "new_tokens": greedy_tokens,
            "seconds": greedy_seconds,
        },
        "coverage": coverage,
        "config": {
            "model": generator.name,
            "dtype": str(generator.dtype),
            "threads": torch.get_num_threads(),
            "max_new_tokens": max_new_tokens,
            "prompts": len(prompts),
            "question_ids": [prompt.question_id for prompt in prompts],
            "settings": settings,
            "datastore_tokens": datastore.num_tokens if datastore is not None else None,
            "draft": dict(vars(generator.draft)),
            "cost_curve": {str(n): generator.cost_model(n) for n in generator.draft.cost_points},
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "per_prompt": per_prompt,
    }


def median_prompt_speedup(per_prompt: Sequence[Mapping[str, Any]], setting: str) -> float | None:
    """Return the median over prompts of greedy's seconds per token over the setting's.

    Greedy and the settings of one prompt run back to back, so this ratio is less exposed to
    load changes on a shared machine than the ratio of totals, which one slow prompt can
    dominate.
    """
    ratios = []
    for row in per_prompt:
        values = row[setting]
        if row["greedy_tokens"] and values["new_tokens"] and values["seconds"]:
            greedy_per_token = row["greedy_seconds"] / row["greedy_tokens"]
            ratios.append(greedy_per_token / (values["seconds"] / values["new_tokens"]))
    return float(np.median(ratios)) if ratios else None


def warm_up_settings(generator, prompt_ids, datastore, settings) -> None:
    """Run greedy and each setting once on a few tokens, so one-time costs are not timed."""
    from reader_rag.evaluation.qa import run_hf_greedy

    short = GenerationConfig(max_new_tokens=4)
    run_hf_greedy(generator.model, prompt_ids, 4)
    for setting in settings:
        generator.datastore = datastore if setting == "on" else None
        generator.generate_ids(prompt_ids, [], short)
    # The warm-up ran on the first prompt, so what it recorded must not help its measured runs.
    generator.forget_drafted_text()


def draft_source_coverage(
    generator,
    encoded: Sequence[tuple[list[int], list[list[int]]]],
    outputs: Sequence[Sequence[int]],
    datastore,
) -> dict[str, Any]:
    """Replay greedy outputs through the request index and the corpus source, without the model.

    At every output position after the first, both sources propose continuations of the
    committed context, with the generator's draft settings and the corpus source's defaults
    (the ones ``ReaderGenerator`` uses). A source "covers" the position when one of its
    candidates starts with the token that greedy decoding chose there. The datastore can add an
    accepted token only at positions that it covers and the request index does not
    (``corpus_only``). ``corpus_skipped`` counts positions where the corpus source returns at
    once because the request index matched at least ``skip_above`` tokens.

    ``skip_thresholds`` shows what other thresholds would do. For each threshold it gives the
    share of positions that would still look up the datastore, and how many corpus-only
    positions those lookups would keep. It is computed from lookups made at every position.

    ``encoded`` contains ``(prompt_ids, document_ids)`` per prompt, aligned with ``outputs``.
    """
    from reader_rag.drafting.sources import CorpusSource, RequestIndexSource
    from reader_rag.index.request_index import RequestIndex

    draft = generator.draft
    records: list[tuple[int, bool, bool]] = []  # request match length, request hit, corpus hit
    lookup_us: list[float] = []
    skip_above = None
    for (prompt_ids, document_ids), output in zip(encoded, outputs):
        index = RequestIndex(key_length=4, max_occurrences=draft.max_occurrences)
        for ids in document_ids:
            index.add_document(ids)
        index.extend(prompt_ids)
        request = RequestIndexSource(
            index, draft.min_match_length, draft.max_match_length, draft.max_occurrences
        )
        corpus = CorpusSource(
            datastore,
            request,
            max_match_length=draft.max_match_length,
            max_occurrences=draft.max_occurrences,
        )
        skip_above = corpus.skip_above
        corpus.skip_above = draft.max_match_length + 1  # look up at every position
        if output:
            index.extend(output[:1])
        for token in output[1:]:
            request_hit = _covers(request.propose(1), token)
            start = time.perf_counter()
            corpus_hit = _covers(corpus.propose(1), token)
            lookup_us.append((time.perf_counter() - start) * 1e6)
            records.append((request.last_match_length, request_hit, corpus_hit))
            index.extend([token])
    return summarize_coverage(records, skip_above, lookup_us)


def summarize_coverage(
    records: Sequence[tuple[int, bool, bool]], skip_above: int | None, lookup_us: list[float]
) -> dict[str, Any]:
    """Count the coverage of ``draft_source_coverage`` at the default and other thresholds."""
    positions = len(records) or 1
    consulted = [r for r in records if skip_above is None or r[0] < skip_above]
    counts = {
        "positions": len(records),
        "request": sum(r[1] for r in records),
        "corpus": sum(r[2] for r in consulted),
        "corpus_only": sum(r[2] and not r[1] for r in consulted),
        "corpus_skipped": len(records) - len(consulted),
        "corpus_only_without_skip": sum(r[2] and not r[1] for r in records),
    }
    thresholds = {}
    for threshold in (1, 2, 4, 8, 16):
        kept = [r for r in records if r[0] < threshold]
        thresholds[str(threshold)] = {
            "lookup_share": len(kept) / positions,
            "corpus_only_kept": sum(r[2] and not r[1] for r in kept),
        }
    return {
        **counts,
        "request_share": counts["request"] / positions,
        "corpus_share": counts["corpus"] / positions,
        "corpus_only_share": counts["corpus_only"] / positions,
        "corpus_skipped_share": counts["corpus_skipped"] / positions,
        "corpus_lookup_us": latency_summary(lookup_us) if lookup_us else None,
        "skip_above": skip_above,
        "skip_thresholds": thresholds,
    }


def _covers(candidates, token: int) -> bool:
    return any(candidate.tokens and candidate.tokens[0] == token for candidate in candidates)


def format_datastore_summary(report: Mapping[str, Any]) -> str:
    """Return a Markdown table of a ``run_datastore_benchmark`` report and a coverage line."""
    rows = [
        {
            "method": "greedy",
            "tokens_per_second": report["greedy"]["tokens_per_second"],
            "speedup_vs_greedy": 1.0,
            "median_prompt_speedup": 1.0,
            "identical_rate": 1.0,
            "tokens_per_step": 1.0,
        }
    ]
    for setting, values in report["settings"].items():
        rows.append({"method": f"reader, datastore {setting}", **values,
                     "corpus_tokens": values["accepted_by_source"].get("corpus", 0)})
    columns = [
        "method", "tokens_per_second", "speedup_vs_greedy", "median_prompt_speedup",
        "identical_rate", "tokens_per_step", "draft_ms_per_step", "corpus_tokens",
    ]
    lines = [markdown_table(rows, columns)]
    coverage = report.get("coverage")
    if coverage:
        lines.append(
            f"\nOf {coverage['positions']} greedy output positions, the request index proposes "
            f"the right next token at {coverage['request_share']:.1%}, the corpus datastore at "
            f"{coverage['corpus_share']:.1%}, and only the datastore at "
            f"{coverage['corpus_only_share']:.1%}; the datastore lookup is skipped at "
            f"{coverage['corpus_skipped_share']:.1%}."
        )
    return "\n".join(lines)


def _progress(iterable, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="prompts", unit="prompt", disable=not enabled)
