"""LlamaIndex LLM backed by a ``reader_rag.ReaderGenerator``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import aclosing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.llm import LLM
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore
from reader_rag import (
    DraftConfig,
    GenerationConfig,
    GenerationResult,
    GenerationStream,
    ReaderGenerator,
)
from reader_rag.generation import Prompt
from reader_rag.generation.llm_options import check_llm_constructor
from reader_rag.generation.threads import iterate_in_thread

__all__ = ["DraftDocument", "ReaderLLM", "drafting_from"]

DraftDocument = str | BaseNode | NodeWithScore
"""A text, node or retrieved node whose content the drafter may copy from."""

_GENERATION_OPTIONS = frozenset(
    {"max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop"}
)
_CALL_OPTIONS = _GENERATION_OPTIONS | {"speculative", "draft_documents"}

_context_documents: ContextVar[tuple[str, ...]] = ContextVar(
    "reader_rag_draft_documents", default=()
)


@contextmanager
def drafting_from(documents: Sequence[DraftDocument]) -> Iterator[None]:
    """Add ``documents`` to the draft documents of every ``ReaderLLM`` call inside the block.

    The documents apply to the current thread or asyncio task and to tasks and
    ``asyncio.to_thread`` calls started inside the block, because they live in a
    ``contextvars.ContextVar``. Nested blocks add to the outer ones. Draft documents change only
    speed, never the output.

    Example::

        nodes = retriever.retrieve(question)
        with drafting_from(nodes):
            response = synthesizer.synthesize(question, nodes)
    """
    token = _context_documents.set(_context_documents.get() + _document_texts(documents))
    try:
        yield
    finally:
        _context_documents.reset(token)


def _document_texts(documents: Sequence[DraftDocument] | None) -> tuple[str, ...]:
    """Return the text of each document as LlamaIndex shows a node to an LLM."""
    if documents is None:
        return ()
    if isinstance(documents, (str, BaseNode, NodeWithScore)):
        raise TypeError(
            "draft documents must be a list of strings or nodes, not a single "
            f"{type(documents).__name__}; wrap it in a list"
        )
    texts = []
    for document in documents:
        if isinstance(document, str):
            texts.append(document)
        elif isinstance(document, NodeWithScore):
            texts.append(document.node.get_content(metadata_mode=MetadataMode.LLM))
        elif isinstance(document, BaseNode):
            texts.append(document.get_content(metadata_mode=MetadataMode.LLM))
        else:
            raise TypeError(
                "a draft document must be a str, BaseNode or NodeWithScore, got "
                f"{type(document).__name__}"
            )
    return tuple(texts)


class ReaderLLM(LLM):
    """Local Hugging Face model with lossless speculative decoding drafted from retrieved text.

    Every request indexes its own prompt, so the retrieved context that a query engine puts in
    the prompt feeds the drafter without any setup. Text that is not in the prompt, such as the
    nodes left out of one refine step, can be added with the ``draft_documents`` keyword of
    each call or with :func:`drafting_from`. Draft documents change speed, not the output,
    because reader_rag's speculative decoding reproduces plain decoding of the same model.

    ``chat`` renders messages with the tokenizer's chat template; a tokenizer without one falls
    back to ``messages_to_prompt``. ``complete`` tokenizes the prompt as raw text after
    ``completion_to_prompt``.

    Per-call keyword arguments ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``,
    ``repetition_penalty``, ``seed``, ``stop`` and ``speculative`` override the fields of the
    same name for that call. ``draft_documents`` adds draft documents, and other keywords raise
    ``TypeError``.

    Responses carry ``additional_kwargs["reader_stats"]`` (``GenerationStats.to_dict()``) and
    ``additional_kwargs["finish_reason"]``. In a stream they are on the last response only.

    Example::

        from llama_index.core import Settings
        Settings.llm = ReaderLLM(max_new_tokens=256)

    Pass ``generator=`` to share a loaded :class:`reader_rag.ReaderGenerator` between
    instances, for example one with ``speculative=False`` as a reference. Pass ``draft=`` (a
    :class:`reader_rag.DraftConfig`) to set the drafting options of the generator that the LLM
    loads itself. Constructor keywords that are neither fields nor ``generator`` or ``draft``
    raise ``TypeError``.
    """

    model: str | None = Field(
        default=None,
        description=(
            "Model to load: a built-in name ('smollm2', 'gemma3-270m'), a local Hugging Face "
            "folder, a .gguf file or a hub id. None loads reader_rag's default model. Not used "
            "when a generator is passed."
        ),
    )
    dtype: str = Field(
        default="float32",
        description="Torch dtype of the loaded weights, such as 'float32' or 'bfloat16'. "
        "Not used when a generator is passed.",
    )
    device: str | None = Field(
        default=None,
        description="Torch device to load the model on; None lets reader_rag choose. "
        "Not used when a generator is passed.",
    )
    max_new_tokens: int = Field(
        default=256, gt=0, description="Maximum number of tokens to generate per call."
    )
    temperature: float = Field(
        default=0.0, ge=0.0, description="Sampling temperature; 0 selects greedy decoding."
    )
    top_k: int = Field(
        default=0, ge=0, description="Sample only from the top_k most likely tokens; 0 disables it."
    )
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1.0 disables it."
    )
    repetition_penalty: float = Field(
        default=1.0, gt=0.0, description="Penalty for tokens already in the sequence; 1.0 disables it."
    )
    seed: int | None = Field(
        default=None,
        description="Seed of the sampling generator; None draws a new seed for every call.",
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Strings that end generation; the text is cut before the first one.",
    )
    speculative: bool = Field(
        default=True,
        description="Verify drafted continuations in one forward pass. False decodes one token "
        "per forward pass, with the same output.",
    )
    context_window: int | None = Field(
        default=None,
        description="Context window in tokens reported to LlamaIndex; None reads "
        "max_position_embeddings from the model config.",
    )
    is_chat_model: bool | None = Field(
        default=None,
        description="Whether LlamaIndex sends chat messages rather than completion prompts; "
        "None means True exactly when the tokenizer has a chat template.",
    )

    _generator: ReaderGenerator = PrivateAttr()

    def __init__(
        self,
        *,
        generator: ReaderGenerator | None = None,
        draft: DraftConfig | None = None,
        **data: Any,
    ) -> None:
        # The pydantic base ignores unknown keywords, so a misspelled option would silently
        # keep its default.
        check_llm_constructor(type(self), generator, draft, data)
        super().__init__(**data)
        # Build the config once so that an invalid field value fails here, not on the first call.
        self._config()
        if generator is None:
            generator = ReaderGenerator.from_pretrained(
                self.model, dtype=self.dtype, device=self.device, draft=draft
            )
        self._generator = generator

    @classmethod
    def class_name(cls) -> str:
        return "ReaderLLM"

    @property
    def generator(self) -> ReaderGenerator:
        """The shared generator that runs every call of this LLM."""
        return self._generator

    @property
    def metadata(self) -> LLMMetadata:
        context_window = self.context_window
        if context_window is None:
            config = self._generator.model.config
            context_window = getattr(config, "max_position_embeddings", None)
            context_window = context_window or DEFAULT_CONTEXT_WINDOW
        is_chat_model = self.is_chat_model
        if is_chat_model is None:
            is_chat_model = self._has_chat_template()
        model_name = self.model if self.model is not None else self._generator.name
        return LLMMetadata(
            context_window=context_window,
            num_output=self.max_new_tokens,
            is_chat_model=is_chat_model,
            model_name=model_name,
        )

    # -- completion ------------------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        request = self._request(self._completion_prompt(prompt, formatted), kwargs)
        return self._completion_stream(self._stream_pieces(request))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt, formatted, kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = self._request(self._completion_prompt(prompt, formatted), kwargs)

        async def responses() -> CompletionResponseAsyncGen:
            text = ""
            async with aclosing(iterate_in_thread(lambda: self._open_stream(request))) as pieces:
                async for piece, result in pieces:
                    text += piece
                    yield CompletionResponse(
                        text=text, delta=piece, additional_kwargs=_result_kwargs(result)
                    )

        return responses()

    def complete_batch(
        self,
        prompts: Sequence[str],
        documents: Sequence[Sequence[DraftDocument] | None] | None = None,
        formatted: bool = False,
        **kwargs: Any,
    ) -> list[CompletionResponse]:
        """Complete many prompts in one batched decode and return one response per prompt, in order.

        ``documents`` contains each prompt's own draft documents: one list, or None, per prompt.
        They add to the documents of a :func:`drafting_from` block and of a ``draft_documents``
        keyword, which apply to every prompt. The other keywords are the per-call options of
        ``complete`` and also apply to every prompt. Each response equals the response of
        ``complete`` for its prompt, and its ``reader_stats["batch_size"]`` is the number of
        prompts decoded together.

        LlamaIndex's LLM interface has no batch method, so query engines never call this one.
        NOTE: it fires no LlamaIndex callback or instrumentation event, unlike ``complete``.
        """
        prompts = list(prompts)
        if documents is None:
            documents = [None] * len(prompts)
        if len(documents) != len(prompts):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(documents)} document lists; pass one list "
                "(or None) per prompt"
            )
        requests = []
        for prompt, own_documents in zip(prompts, documents):
            request = self._request(self._completion_prompt(prompt, formatted), kwargs)
            own_texts = list(_document_texts(own_documents))
            requests.append(replace(request, documents=request.documents + own_texts))
        return [
            CompletionResponse(text=result.text, additional_kwargs=_result_kwargs(result))
            for result in self._generate_many(requests)
        ]

    async def acomplete_batch(
        self,
        prompts: Sequence[str],
        documents: Sequence[Sequence[DraftDocument] | None] | None = None,
        formatted: bool = False,
        **kwargs: Any,
    ) -> list[CompletionResponse]:
        """Run :meth:`complete_batch` in a worker thread, without blocking the event loop."""
        return await asyncio.to_thread(self.complete_batch, prompts, documents, formatted, **kwargs)

    # -- chat ------------------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._request(self._chat_prompt(messages), kwargs)
        return self._chat_stream(self._stream_pieces(request))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._chat, messages, kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        request = self._request(self._chat_prompt(messages), kwargs)

        async def responses() -> ChatResponseAsyncGen:
            text = ""
            async with aclosing(iterate_in_thread(lambda: self._open_stream(request))) as pieces:
                async for piece, result in pieces:
                    text += piece
                    yield _chat_response(text, piece, result)

        return responses()

    # -- shared paths ----------------------------------------------------------------------------

    def _complete(self, prompt: str, formatted: bool, kwargs: dict[str, Any]) -> CompletionResponse:
        result = self._generate(self._request(self._completion_prompt(prompt, formatted), kwargs))
        return CompletionResponse(text=result.text, additional_kwargs=_result_kwargs(result))

    def _chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        result = self._generate(self._request(self._chat_prompt(messages), kwargs))
        return _chat_response(result.text, None, result)

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        if not formatted:
            prompt = self.completion_to_prompt(prompt)
        return prompt

    def _chat_prompt(self, messages: Sequence[ChatMessage]) -> Prompt:
        if not self._has_chat_template():
            return self.messages_to_prompt(messages)
        return [{"role": _role_name(m.role), "content": m.content or ""} for m in messages]

    def _has_chat_template(self) -> bool:
        return bool(getattr(self._generator.tokenizer, "chat_template", None))

    def _config(self, overrides: dict[str, Any] | None = None) -> GenerationConfig:
        options = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": tuple(self.stop),
        }
        options.update(overrides or {})
        return GenerationConfig(**options)

    def _request(self, prompt: Prompt, kwargs: dict[str, Any]) -> _Request:
        """Resolve the call's options and draft documents in the caller's context."""
        unknown = sorted(set(kwargs) - _CALL_OPTIONS)
        if unknown:
            raise TypeError(
                f"ReaderLLM got unsupported keyword arguments {unknown}; "
                f"supported: {sorted(_CALL_OPTIONS)}"
            )
        overrides = {k: v for k, v in kwargs.items() if k in _GENERATION_OPTIONS}
        documents = _context_documents.get() + _document_texts(kwargs.get("draft_documents"))
        return _Request(
            prompt=prompt,
            documents=list(documents),
            config=self._config(overrides),
            speculative=bool(kwargs.get("speculative", self.speculative)),
        )

    def _generate(self, request: _Request) -> GenerationResult:
        return self._generator.generate(
            request.prompt,
            request.documents,
            config=request.config,
            speculative=request.speculative,
        )

    def _generate_many(self, requests: Sequence[_Request]) -> list[GenerationResult]:
        """Generate one request alone, or several in one ``generate_batch`` loop.

        The requests of one call share one ``speculative`` setting, so the first one's applies.
        """
        if not requests:
            return []
        if len(requests) == 1:
            return [self._generate(requests[0])]
        return self._generator.generate_batch(
            [request.prompt for request in requests],
            [request.documents for request in requests],
            configs=[request.config for request in requests],
            speculative=requests[0].speculative,
        )

    def _open_stream(self, request: _Request) -> GenerationStream:
        return self._generator.stream(
            request.prompt,
            request.documents,
            config=request.config,
            speculative=request.speculative,
        )

    def _stream_pieces(self, request: _Request) -> Iterator[tuple[str, GenerationResult | None]]:
        """Yield ``(piece, result)`` like ``iterate_in_thread``, in the calling thread."""
        stream = self._open_stream(request)
        final_seen = False
        try:
            for piece in stream:
                final_seen = stream.result is not None
                yield piece, stream.result
        finally:
            stream.close()
        if not final_seen:
            yield "", stream.result

    @staticmethod
    def _completion_stream(
        pieces: Iterator[tuple[str, GenerationResult | None]],
    ) -> CompletionResponseGen:
        text = ""
        for piece, result in pieces:
            text += piece
            yield CompletionResponse(text=text, delta=piece, additional_kwargs=_result_kwargs(result))

    @staticmethod
    def _chat_stream(pieces: Iterator[tuple[str, GenerationResult | None]]) -> ChatResponseGen:
        text = ""
        for piece, result in pieces:
            text += piece
            yield _chat_response(text, piece, result)


@dataclass(frozen=True)
class _Request:
    """Prompt, draft documents and options of one call, resolved before generation starts."""

    prompt: Prompt
    documents: list[str]
    config: GenerationConfig
    speculative: bool


def _role_name(role: MessageRole | str) -> str:
    return role.value if isinstance(role, MessageRole) else str(role)


def _result_kwargs(result: GenerationResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    return {"reader_stats": result.stats.to_dict(), "finish_reason": result.finish_reason}


def _chat_response(text: str, delta: str | None, result: GenerationResult | None) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
        delta=delta,
        additional_kwargs=_result_kwargs(result),
    )
