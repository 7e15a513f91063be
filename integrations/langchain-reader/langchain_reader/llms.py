"""LangChain LLM backed by a ``reader_rag.ReaderGenerator``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import Field, PrivateAttr
from reader_rag import (
    DraftConfig,
    GenerationConfig,
    GenerationResult,
    GenerationStream,
    ReaderGenerator,
)
from reader_rag.generation.llm_options import check_llm_constructor
from reader_rag.generation.threads import iterate_in_thread

__all__ = ["ReaderLLM"]

_GENERATION_OPTIONS = frozenset(
    {"max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed"}
)
_CALL_OPTIONS = _GENERATION_OPTIONS | {"speculative", "draft_documents"}


@dataclass(frozen=True)
class _Request:
    """Prompt, draft documents and options of one call, resolved before generation starts."""

    prompt: str
    documents: list[str]
    config: GenerationConfig
    speculative: bool


class ReaderLLM(LLM):
    """Local Hugging Face model with lossless speculative decoding drafted from retrieved text.

    Every request indexes its own prompt, so the documents that a RAG chain formats into the
    prompt feed the drafter without any setup. Text that is not in the prompt can be added with
    the ``draft_documents`` keyword (strings or ``Document`` objects), for example through
    ``llm.bind(draft_documents=docs)``. Draft documents change speed, not the output, because
    reader_rag's speculative decoding reproduces plain decoding of the same model.

    Prompts are tokenized as raw text, without the chat template.

    Per-call keyword arguments ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``,
    ``repetition_penalty``, ``seed`` and ``speculative`` override the fields of the same name
    for that call. Other keywords raise ``TypeError``. Stop strings of the call and of the
    ``stop`` field both end generation.

    ``batch``, ``abatch`` and ``generate`` with several prompts decode all prompts of the call
    together in one ``ReaderGenerator.generate_batch`` loop. Each prompt still gets the output of
    a single call, and its ``reader_stats["batch_size"]`` is the number of prompts decoded
    together.

    Each generation's ``generation_info`` contains ``reader_stats`` (``GenerationStats.to_dict()``)
    and ``finish_reason``. In a stream they are on the last chunk only.

    Example::

        chain = retriever | prompt | ReaderLLM(max_new_tokens=256) | StrOutputParser()

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
    stop: list[str] | None = Field(
        default=None,
        description="Strings that end every call, in addition to the stop strings of the call.",
    )
    speculative: bool = Field(
        default=True,
        description="Verify drafted continuations in one forward pass. False decodes one token "
        "per forward pass, with the same output.",
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
        self._config(None, {})
        if generator is None:
            generator = ReaderGenerator.from_pretrained(
                self.model, dtype=self.dtype, device=self.device, draft=draft
            )
        self._generator = generator

    @property
    def generator(self) -> ReaderGenerator:
        """The shared generator that runs every call of this LLM."""
        return self._generator

    @property
    def _llm_type(self) -> str:
        return "reader"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "model_name": self.model if self.model is not None else self._generator.name,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": self.stop,
            "speculative": self.speculative,
        }

    def get_token_ids(self, text: str) -> list[int]:
        """Tokenize ``text`` with the model's own tokenizer, without special tokens."""
        return list(self._generator.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- LangChain entry points ------------------------------------------------------------------

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        [result] = self._generate_batch([self._request(prompt, stop, kwargs)])
        return result.text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        request = self._request(prompt, stop, kwargs)
        [result] = await asyncio.to_thread(self._generate_batch, [request])
        return result.text

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        requests = [self._request(prompt, stop, kwargs) for prompt in prompts]
        return _llm_result(self._generate_batch(requests))

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        requests = [self._request(prompt, stop, kwargs) for prompt in prompts]
        return _llm_result(await asyncio.to_thread(self._generate_batch, requests))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        stream = self._open_stream(self._request(prompt, stop, kwargs))
        final_seen = False
        try:
            for piece in stream:
                final_seen = stream.result is not None
                chunk = _chunk(piece, stream.result)
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            stream.close()
        if not final_seen:
            yield _chunk("", stream.result)

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        request = self._request(prompt, stop, kwargs)
        async with aclosing(iterate_in_thread(lambda: self._open_stream(request))) as pieces:
            async for piece, result in pieces:
                chunk = _chunk(piece, result)
                if piece and run_manager is not None:
                    await run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk

    # -- shared paths ----------------------------------------------------------------------------

    def _config(self, stop: list[str] | None, overrides: dict[str, Any]) -> GenerationConfig:
        stop_strings = list(self.stop or [])
        for text in stop or []:
            if text not in stop_strings:
                stop_strings.append(text)
        options = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": tuple(stop_strings),
        }
        options.update(overrides)
        return GenerationConfig(**options)

    def _request(self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]) -> _Request:
        unknown = sorted(set(kwargs) - _CALL_OPTIONS)
        if unknown:
            raise TypeError(
                f"ReaderLLM got unsupported keyword arguments {unknown}; "
                f"supported: {sorted(_CALL_OPTIONS)}"
            )
        overrides = {k: v for k, v in kwargs.items() if k in _GENERATION_OPTIONS}
        return _Request(
            prompt=prompt,
            documents=_document_texts(kwargs.get("draft_documents")),
            config=self._config(stop, overrides),
            speculative=bool(kwargs.get("speculative", self.speculative)),
        )

    def _generate_batch(self, requests: Sequence[_Request]) -> list[GenerationResult]:
        """Generate every request of one call and return the results in request order.

        Every call but a stream generates through here. One request decodes alone with
        ``generate``. Several decode together with ``generate_batch``, one batched loop per
        ``speculative`` setting, and each keeps its own prompt, draft documents and config.
        ``generate_batch`` returns per request the output of ``generate``, up to floating-point
        rounding of batched matrix products (exact in the float32 tests).
        """
        if len(requests) == 1:
            [request] = requests
            result = self._generator.generate(
                request.prompt,
                request.documents,
                config=request.config,
                speculative=request.speculative,
            )
            return [result]
        results: list[GenerationResult | None] = [None] * len(requests)
        for speculative in (True, False):
            positions = [
                i for i, request in enumerate(requests) if request.speculative == speculative
            ]
            if not positions:
                continue
            batch = self._generator.generate_batch(
                [requests[i].prompt for i in positions],
                [requests[i].documents for i in positions],
                configs=[requests[i].config for i in positions],
                speculative=speculative,
            )
            for i, result in zip(positions, batch, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    def _open_stream(self, request: _Request) -> GenerationStream:
        return self._generator.stream(
            request.prompt,
            request.documents,
            config=request.config,
            speculative=request.speculative,
        )


def _document_texts(documents: Sequence[str | Document] | None) -> list[str]:
    if documents is None:
        return []
    if isinstance(documents, (str, Document)):
        raise TypeError(
            "draft_documents must be a list of strings or Documents, not a single "
            f"{type(documents).__name__}; wrap it in a list"
        )
    texts = []
    for document in documents:
        if isinstance(document, str):
            texts.append(document)
        elif isinstance(document, Document):
            texts.append(document.page_content)
        else:
            raise TypeError(
                f"a draft document must be a str or Document, got {type(document).__name__}"
            )
    return texts


def _generation_info(result: GenerationResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {"reader_stats": result.stats.to_dict(), "finish_reason": result.finish_reason}


def _chunk(piece: str, result: GenerationResult | None) -> GenerationChunk:
    return GenerationChunk(text=piece, generation_info=_generation_info(result))


def _llm_result(results: Sequence[GenerationResult]) -> LLMResult:
    return LLMResult(
        generations=[
            [Generation(text=result.text, generation_info=_generation_info(result))]
            for result in results
        ]
    )
