"""The ``reader-rag`` command line: ask, bench and demo.

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

__all__ = ["main"]

logger = logging.getLogger(__name__)

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
    ask.set_defaults(handler=_ask)

    bench = commands.add_parser("bench", help="compare decoding methods side by side")
    bench.add_argument(
        "--dataset", default="specbench-rag",
        choices=["specbench-rag", "specbench-summarization"],
        help="bundled prompt set",
    )
    bench.add_argument("--limit", type=int, default=20, help="number of prompts (default 20)")
    bench.add_argument("--max-new-tokens", type=int, default=128, help="tokens per prompt")
    bench.add_argument(
        "--methods", default="greedy,pld,reader,oracle",
        help="comma-separated: greedy, pld, plain, reader, oracle (default: %(default)s)",
    )
    bench.add_argument("--output", type=Path, help="write the JSON report to this file")
    _add_model_options(bench)
    bench.set_defaults(handler=_bench)

    demo = commands.add_parser(
        "demo", help="answer a bundled Spec-Bench RAG prompt and compare with plain decoding"
    )
    demo.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate")
    _add_model_options(demo)
    demo.set_defaults(handler=_demo)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=None,
        help="built-in name (smollm2, gemma3-270m), model folder, .gguf file or hub id "
        "(default: smollm2)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "fp32", "bfloat16", "bf16"],
        help="weight dtype (default float32, which keeps outputs bit-identical)",
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--max-nodes", type=int, default=None,
        help="cap on draft nodes per step (default: chosen by the measured cost model; 0 = off)",
    )


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate")
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
    from reader_rag.config import GenerationConfig
    from reader_rag.generation.prompts import build_rag_messages
    from reader_rag.retrieval.documents import load_documents

    if args.question is None:
        if not args.documents:
            raise ValueError('missing question; usage: reader-rag ask --documents PATH... "question"')
        args.question = args.documents.pop()

    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    documents = [d.text for d in load_documents(args.documents)] if args.documents else []
    generator = _load_generator(args)
    room = generator.max_positions - min(config.max_new_tokens, generator.max_positions // 2)
    messages, _ = build_rag_messages(args.question, documents, generator.tokenizer, room)
    prompt = messages if getattr(generator.tokenizer, "chat_template", None) else messages[0]["content"]

    result = generator.generate(prompt, documents, config=config)
    print(result.text)
    if args.stats:
        plain = generator.generate(prompt, documents, config=config, speculative=False)
        stats = result.stats
        print(
            f"\n[{stats.new_tokens} tokens, {stats.tokens_per_step:.2f} tokens per step, "
            f"{stats.tokens_per_second:.1f} tokens/s; plain decoding "
            f"{plain.stats.tokens_per_second:.1f} tokens/s; speedup "
            f"{stats.tokens_per_second / max(plain.stats.tokens_per_second, 1e-9):.2f}x; "
            f"identical to plain: {result.token_ids == plain.token_ids}]"
        )
    return 0


def _bench(args) -> int:
    from reader_rag.evaluation.bench import run_benchmark
    from reader_rag.evaluation.datasets import load_dataset
    from reader_rag.evaluation.metrics import markdown_table

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    prompts = load_dataset(args.dataset, limit=args.limit)
    generator = _load_generator(args)
    report = run_benchmark(generator, prompts, methods, args.max_new_tokens)
    report["config"]["dataset"] = args.dataset
    rows = [{"method": name, **values} for name, values in report["methods"].items()]
    columns = ["method", "tokens_per_second", "speedup_vs_greedy", "identical_rate", "tokens_per_step"]
    print(markdown_table(rows, columns))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.output}")
    return 0


def _demo(args) -> int:
    from reader_rag.evaluation.bench import run_benchmark
    from reader_rag.evaluation.datasets import load_dataset

    prompt = load_dataset("specbench-rag", limit=1)[0]
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


if __name__ == "__main__":
    sys.exit(main())
