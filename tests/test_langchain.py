"""Tests for the LangChain integration: an LCEL RAG chain over a real FAISS document store.

Every answer is compared with the same model decoding without speculation, which is the output
that lossless speculative decoding must reproduce.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_reader import ReaderLLM

from reader_rag import DraftConfig
from reader_rag.evaluation.datasets import load_specbench
from reader_rag.retrieval.documents import Document as StoreDocument
from reader_rag.retrieval.store import DocumentStore

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 32
# Spec-Bench rag prompts whose passages are indexed, and how many of their questions are asked.
INDEXED_PROMPTS = 5
ASKED_QUESTIONS = 2
CONCURRENT_CALLERS = 8
# Output length of the calls that test call forms rather than retrieval.
SHORT_MAX_NEW_TOKENS = 16

RAG_PROMPT = PromptTemplate.from_template(
    "Answer the question using the context.\n\n{context}\n\nQ: {question}?\nA: "
)


class StoreRetriever(BaseRetriever):
    """LangChain retriever over a reader_rag ``DocumentStore``."""

    store: Any
    k: int = 2

    def _get_relevant_documents(self, query: str, *, run_manager) -> list[Document]:
        return [
            Document(page_content=result.chunk.text, metadata={"source": result.chunk.source})
            for result in self.store.search(query, self.k)
        ]


class TokenRecorder(BaseCallbackHandler):
    """Keeps the tokens and the final result that a run reports."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.results = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response, **kwargs) -> None:
        self.results.append(response)


class AsyncTokenRecorder(AsyncCallbackHandler):
    """Keeps the tokens that an async run reports."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


def format_documents(documents: list[Document]) -> str:
    return "\n".join(document.page_content for document in documents)


def rag_chain(retriever: BaseRetriever, llm: ReaderLLM):
    return (
        {"context": retriever | format_documents, "question": RunnablePassthrough()}
        | RAG_PROMPT
        | llm
        | StrOutputParser()
    )


@pytest.fixture(scope="module")
def rag_rows():
    return load_specbench("rag", limit=max(INDEXED_PROMPTS, CONCURRENT_CALLERS))


@pytest.fixture(scope="module")
def questions(rag_rows) -> list[str]:
    return [row.question for row in rag_rows[:ASKED_QUESTIONS]]


@pytest.fixture(scope="module")
def retriever(rag_rows, tmp_path_factory) -> StoreRetriever:
    documents = [
        StoreDocument(passage, f"q{row.question_id}#{number}")
        for row in rag_rows[:INDEXED_PROMPTS]
        for number, passage in enumerate(row.passages)
    ]
    store = DocumentStore.build(
        documents, tmp_path_factory.mktemp("store") / "passages", show_progress=False
    )
    return StoreRetriever(store=store)


@pytest.fixture(scope="module")
def llm(reader_generator) -> ReaderLLM:
    return ReaderLLM(generator=reader_generator, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def plain_llm(reader_generator) -> ReaderLLM:
    """The same model decoding one token per forward pass: the expected output."""
    return ReaderLLM(generator=reader_generator, max_new_tokens=MAX_NEW_TOKENS, speculative=False)


@pytest.fixture(scope="module")
def plain_answers(retriever, plain_llm, questions) -> list[str]:
    chain = rag_chain(retriever, plain_llm)
    return [chain.invoke(question) for question in questions]


@pytest.fixture(scope="module")
def concurrent_prompts(rag_rows) -> list[str]:
    """Eight short prompts, one retrieved passage and a question each."""
    rows = rag_rows[:CONCURRENT_CALLERS]
    return [f"{row.passages[0]}\n\nQ: {row.question}?\nA: " for row in rows]


@pytest.fixture(scope="module")
def sequential_outputs(llm, concurrent_prompts) -> list[str]:
    outputs = [
        llm.invoke(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS) for prompt in concurrent_prompts
    ]
    # Distinct outputs let a comparison catch answers swapped between callers.
    assert len(set(outputs)) == len(outputs)
    return outputs


# Retrieval


def test_retriever_finds_source_passages(retriever, rag_rows) -> None:
    row = rag_rows[0]

    documents = retriever.invoke(row.question)

    assert len(documents) == 2
    assert any(d.metadata["source"].startswith(f"q{row.question_id}#") for d in documents)


# RAG chain


def test_chain_invoke_matches_plain(retriever, llm, questions, plain_answers) -> None:
    chain = rag_chain(retriever, llm)

    answers = [chain.invoke(question) for question in questions]

    assert answers == plain_answers
    assert all(answers)


def test_chain_stream_matches_plain(retriever, llm, questions, plain_answers) -> None:
    recorder = TokenRecorder()
    chain = rag_chain(retriever, llm)

    pieces = list(chain.stream(questions[0], config={"callbacks": [recorder]}))

    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == plain_answers[0]
    assert "".join(recorder.tokens) == plain_answers[0]
    assert all(recorder.tokens)
    [result] = recorder.results
    info = result.generations[0][0].generation_info
    assert info["reader_stats"]["new_tokens"] > 0
    assert info["finish_reason"] in ("eos", "length")


def test_chain_batch_matches_plain(retriever, llm, questions, plain_answers) -> None:
    chain = rag_chain(retriever, llm)

    assert chain.batch(questions) == plain_answers


def test_chain_async_matches_plain(retriever, llm, questions, plain_answers) -> None:
    chain = rag_chain(retriever, llm)
    recorder = AsyncTokenRecorder()

    async def run() -> tuple[str, list[str]]:
        answer = await chain.ainvoke(questions[1])
        pieces = [p async for p in chain.astream(questions[0], config={"callbacks": [recorder]})]
        return answer, pieces

    answer, pieces = asyncio.run(run())

    assert answer == plain_answers[1]
    assert "".join(pieces) == plain_answers[0]
    assert "".join(recorder.tokens) == plain_answers[0]


@pytest.fixture(scope="module")
def batch_prompts(rag_rows) -> list[str]:
    """Three prompts of different lengths: one, two and three passages before the question."""
    return [
        "\n".join(row.passages[:count]) + f"\n\nQ: {row.question}?\nA: "
        for count, row in enumerate(rag_rows[:3], start=1)
    ]


@pytest.fixture
def batch_calls(reader_generator, monkeypatch) -> list[int]:
    """Record the number of prompts of every ``generate_batch`` call, which still runs."""
    calls: list[int] = []
    generate_batch = reader_generator.generate_batch

    def recording_generate_batch(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return generate_batch(prompts, *args, **kwargs)

    monkeypatch.setattr(reader_generator, "generate_batch", recording_generate_batch)
    return calls


def test_batch_decodes_prompts_together(llm, batch_prompts, batch_calls) -> None:
    singles = [llm.invoke(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS) for prompt in batch_prompts]
    assert batch_calls == [], "a single invoke should not call generate_batch"
    recorder = TokenRecorder()

    outputs = llm.batch(
        batch_prompts, config={"callbacks": [recorder]}, max_new_tokens=SHORT_MAX_NEW_TOKENS
    )

    assert outputs == singles
    assert len(set(outputs)) == len(outputs), "distinct outputs catch swapped answers"
    assert batch_calls == [3]
    assert len(recorder.results) == 3
    for result in recorder.results:
        stats = result.generations[0][0].generation_info["reader_stats"]
        assert stats["batch_size"] == 3


def test_abatch_decodes_prompts_together(llm, batch_prompts, batch_calls) -> None:
    stop = ["."]
    recorder = TokenRecorder()

    async def run() -> tuple[list[str], list[str]]:
        singles = [
            await llm.ainvoke(prompt, stop=stop, max_new_tokens=SHORT_MAX_NEW_TOKENS)
            for prompt in batch_prompts
        ]
        outputs = await llm.abatch(
            batch_prompts,
            config={"callbacks": [recorder]},
            stop=stop,
            max_new_tokens=SHORT_MAX_NEW_TOKENS,
        )
        return singles, outputs

    singles, outputs = asyncio.run(run())

    assert outputs == singles
    assert batch_calls == [3]
    infos = [result.generations[0][0].generation_info for result in recorder.results]
    assert [info["reader_stats"]["batch_size"] for info in infos] == [3, 3, 3]
    assert "stop" in [info["finish_reason"] for info in infos], "the stop string should end one"
    assert not any("." in output for output in outputs)


def test_generate_reports_batch_size(llm, plain_llm, batch_prompts, batch_calls) -> None:
    result = llm.generate(batch_prompts, max_new_tokens=SHORT_MAX_NEW_TOKENS)
    plain = plain_llm.generate(batch_prompts, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    assert batch_calls == [3, 3]
    for generations, plain_generations in zip(result.generations, plain.generations, strict=True):
        [generation] = generations
        [plain_generation] = plain_generations
        assert generation.text == plain_generation.text
        assert generation.generation_info["reader_stats"]["batch_size"] == 3
        plain_stats = plain_generation.generation_info["reader_stats"]
        assert plain_stats["forward_passes"] == plain_stats["new_tokens"]


# The LLM alone


def test_identifying_params(llm, reader_generator) -> None:
    params = llm._identifying_params

    assert params["model_name"] == reader_generator.name
    assert params["max_new_tokens"] == MAX_NEW_TOKENS
    assert params["speculative"] is True
    assert llm._llm_type == "reader"


def test_token_ids_use_model_tokenizer(llm, reader_generator) -> None:
    text = "Retrieval-augmented generation"

    ids = llm.get_token_ids(text)

    assert ids == reader_generator.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert llm.get_num_tokens(text) == len(ids)


def test_generation_info_has_stats(llm, plain_llm, concurrent_prompts) -> None:
    prompt = concurrent_prompts[0]

    result = llm.generate([prompt], max_new_tokens=SHORT_MAX_NEW_TOKENS).generations[0][0]
    plain = plain_llm.generate([prompt], max_new_tokens=SHORT_MAX_NEW_TOKENS).generations[0][0]

    assert result.text == plain.text
    stats = result.generation_info["reader_stats"]
    plain_stats = plain.generation_info["reader_stats"]
    assert stats["new_tokens"] == plain_stats["new_tokens"] > 0
    assert plain_stats["forward_passes"] == plain_stats["new_tokens"]
    assert result.generation_info["finish_reason"] == plain.generation_info["finish_reason"]


def test_stop_cuts_output(llm, sequential_outputs, concurrent_prompts) -> None:
    full = sequential_outputs[0]
    stop = full.split()[2]
    expected = full[: full.index(stop)]

    result = llm.generate(
        [concurrent_prompts[0]], stop=[stop], max_new_tokens=SHORT_MAX_NEW_TOKENS
    ).generations[0][0]

    assert result.text == expected
    assert result.generation_info["finish_reason"] == "stop"


def test_stop_field_and_call_combine(reader_generator, sequential_outputs, concurrent_prompts) -> None:
    full = sequential_outputs[0]
    call_stop, field_stop = full.split()[1], full.split()[3]
    llm = ReaderLLM(
        generator=reader_generator, max_new_tokens=SHORT_MAX_NEW_TOKENS, stop=[field_stop]
    )
    first_stop = min(full.index(call_stop), full.index(field_stop))

    assert llm.invoke(concurrent_prompts[0], stop=[call_stop]) == full[:first_stop]
    assert llm.invoke(concurrent_prompts[0]) == full[: full.index(field_stop)]


def test_draft_documents_are_indexed(llm, rag_rows) -> None:
    row = rag_rows[0]
    prompt = f"Q: {row.question}?\nA: "
    passages = list(row.passages)
    recorder = TokenRecorder()

    alone = llm.generate([prompt], max_new_tokens=4).generations[0][0]
    with_strings = llm.generate([prompt], max_new_tokens=4, draft_documents=passages)
    bound = llm.bind(draft_documents=[Document(page_content=p) for p in passages])
    bound_text = bound.invoke(prompt, config={"callbacks": [recorder]}, max_new_tokens=4)

    with_strings = with_strings.generations[0][0]
    with_documents = recorder.results[0].generations[0][0]
    indexed_alone = alone.generation_info["reader_stats"]["indexed_tokens"]
    assert indexed_alone < with_strings.generation_info["reader_stats"]["indexed_tokens"]
    assert with_documents.generation_info["reader_stats"]["indexed_tokens"] == (
        with_strings.generation_info["reader_stats"]["indexed_tokens"]
    )
    assert with_strings.text == alone.text
    assert bound_text == alone.text


def test_unsupported_keyword_raises(llm) -> None:
    with pytest.raises(TypeError, match="unsupported keyword arguments \\['beam_width'\\]"):
        llm.invoke("Hello", beam_width=4)


def test_invalid_field_raises_at_construction(reader_generator) -> None:
    with pytest.raises(ValueError, match="temperature"):
        ReaderLLM(generator=reader_generator, temperature=-1.0)


def test_langchain_fields_pass_constructor_check(reader_generator) -> None:
    recorder = TokenRecorder()

    llm = ReaderLLM(
        generator=reader_generator,
        callbacks=[recorder],
        tags=["reader"],
        metadata={"run": 1},
        verbose=True,
        cache=False,
    )

    assert llm.callbacks == [recorder]
    assert llm.tags == ["reader"]
    assert llm.metadata["run"] == 1
    assert llm.verbose is True
    assert llm.cache is False


def test_draft_config_reaches_generator(plain_llm, concurrent_prompts) -> None:
    draft = DraftConfig(max_nodes=0)
    llm = ReaderLLM(draft=draft, max_new_tokens=SHORT_MAX_NEW_TOKENS)
    prompt = concurrent_prompts[0]

    result = llm.generate([prompt]).generations[0][0]
    plain = plain_llm.generate([prompt], max_new_tokens=SHORT_MAX_NEW_TOKENS).generations[0][0]

    assert llm.generator.draft is draft
    assert result.text == plain.text
    # max_nodes=0 turns speculation off, so nothing is drafted.
    stats = result.generation_info["reader_stats"]
    assert stats["drafted_nodes"] == 0
    assert stats["forward_passes"] == stats["new_tokens"]


# Concurrency


def test_concurrent_threads_match_sequential(llm, concurrent_prompts, sequential_outputs) -> None:
    def invoke(prompt: str) -> str:
        return llm.invoke(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    with ThreadPoolExecutor(max_workers=CONCURRENT_CALLERS) as pool:
        outputs = list(pool.map(invoke, concurrent_prompts))

    assert outputs == sequential_outputs


def test_concurrent_tasks_match_sequential(llm, concurrent_prompts, sequential_outputs) -> None:
    """Half the tasks invoke, half stream; a ticker checks that the event loop keeps running."""

    async def invoke(prompt: str) -> str:
        return await llm.ainvoke(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    async def stream(prompt: str) -> str:
        pieces = llm.astream(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        return "".join([piece async for piece in pieces])

    async def run() -> tuple[list[str], int]:
        ticks = 0
        done = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        calls = [
            (invoke if i % 2 == 0 else stream)(prompt) for i, prompt in enumerate(concurrent_prompts)
        ]
        outputs = await asyncio.gather(*calls)
        done.set()
        await ticker
        return outputs, ticks

    started = time.perf_counter()
    outputs, ticks = asyncio.run(run())
    elapsed = time.perf_counter() - started

    assert outputs == sequential_outputs
    # A loop blocked by generation would tick only between calls, about once per call.
    assert ticks > 10 * CONCURRENT_CALLERS, f"{ticks} ticks in {elapsed:.1f} s"


def test_early_close_of_async_stream(llm, concurrent_prompts, sequential_outputs) -> None:
    async def first_piece() -> str:
        pieces = llm.astream(concurrent_prompts[0], max_new_tokens=SHORT_MAX_NEW_TOKENS)
        async for piece in pieces:
            await pieces.aclose()
            return piece
        return ""

    piece = asyncio.run(first_piece())

    assert piece
    assert sequential_outputs[0].startswith(piece)
    # The generator stays usable after a stream is abandoned.
    assert llm.invoke(concurrent_prompts[0], max_new_tokens=SHORT_MAX_NEW_TOKENS) == (
        sequential_outputs[0]
    )
