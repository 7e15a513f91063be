"""The single-request speculative decoding loop.

One step: draft a tree from the request index, verify the root and all nodes in one forward
pass with a tree attention mask, walk the tree along the target's own choices, commit the KV
entries of the accepted path, and emit the accepted tokens plus the target's bonus token.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import (
    Cache,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.builder import build_draft_tree, choose_tree_size
from reader_rag.drafting.calibration import AcceptanceCalibrator, Bucket
from reader_rag.drafting.cost_model import AdaptiveCostModel, CostModel
from reader_rag.drafting.history import ResponseHistory
from reader_rag.drafting.recycling import RecyclingTable, prompt_rows
from reader_rag.drafting.sources import (
    Candidate,
    CorpusSource,
    DraftSource,
    HistorySource,
    RequestIndexSource,
)
from reader_rag.drafting.tree import DraftTree
from reader_rag.generation.results import GenerationResult, GenerationStats, GenerationStream
from reader_rag.generation.text import StopMatcher, TextStreamer, cut_at_stop
from reader_rag.index.request_index import RequestIndex
from reader_rag.models import FinalHiddenStates, load_model
from reader_rag.token_ids import as_token_ids
from reader_rag.verify.accept import walk_tree
from reader_rag.verify.cache import commit_kv, new_cache, truncate_cache
from reader_rag.verify.mask import tree_attention_inputs

__all__ = ["BATCH_COST_WIDTHS", "MAX_MEASURED_BATCH", "Prompt", "ReaderGenerator"]

logger = logging.getLogger(__name__)

BATCH_COST_WIDTHS = (1, 2, 3, 5, 9, 17)
"""Tree widths (tokens per request) at which batched steps are timed."""

MAX_MEASURED_BATCH = 16
"""Largest batch size whose step cost is timed; larger batches scale its curve."""

Prompt = str | Sequence[Mapping[str, str]]
"""A raw text prompt, or chat messages (``{"role": ..., "content": ...}``) for the chat template."""


@dataclass
class _Request:
    """Mutable state of one request while it decodes."""

    config: GenerationConfig
    prompt_ids: list[int]
    max_new_tokens: int
    index: RequestIndex
    sources: list[DraftSource]
    processors: LogitsProcessorList | None
    rng: torch.Generator | None
    stop: StopMatcher
    eos: frozenset[int]
    cache: Cache = field(default_factory=new_cache)
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stats: GenerationStats = field(default_factory=GenerationStats)

    @property
    def committed_length(self) -> int:
        """Tokens whose KV entries are in the cache: the prompt and all outputs but the last."""
        return len(self.prompt_ids) + len(self.generated) - 1


def _document_token_ids(
    document_ids: Sequence[Sequence[int]], vocab_size: int, model_name: str
) -> list[list[int]]:
    """Return ``document_ids`` as lists of ints, or raise ``ValueError`` before any model work.

    A document id outside the vocabulary would be drafted and then fail inside the model's
    embedding, in the middle of decoding.
    """
    if isinstance(document_ids, (str, bytes)) or not isinstance(document_ids, Iterable):
        raise ValueError(
            f"document_ids must be a list of token id lists, one per document, got "
            f"{type(document_ids).__name__}"
        )
    documents = []
    for number, ids in enumerate(document_ids):
        if isinstance(ids, (int, np.integer)):
            raise ValueError(
                f"document_ids must be a list of token id lists, one per document, got the int "
                f"{ids} at position {number}; wrap a single document's ids in a list: [ids]"
            )
        ids = as_token_ids(ids, "document token ids")
        values = np.asarray(ids, dtype=np.int64)
        outside = np.flatnonzero((values < 0) | (values >= vocab_size))
        if outside.size:
            raise ValueError(
                f"document {number} has token id {ids[outside[0]]}, outside the vocabulary of "
                f"{model_name} (0 to {vocab_size - 1}); encode documents with this generator's "
                "tokenizer (encode_documents)"
            )
        documents.append(ids)
    return documents


class _OracleSource:
    """Proposes the known reference continuation; the benchmark's ceiling for any drafter."""

    name = "oracle"

    def __init__(self, request: _Request, reference: Sequence[int]) -> None:
        self.request = request
        self.reference = list(reference)

    def propose(self, max_depth: int) -> list[Candidate]:
        start = len(self.request.generated)
        tokens = tuple(self.reference[start : start + max_depth])
        return [Candidate(tokens, 1.0, 1 << 20, self.name)] if tokens else []


class ReaderGenerator:
    """Lossless speculative decoding for one target model, drafted from the request's documents.

    Args:
        model: A causal language model from ``transformers``.
        tokenizer: Its tokenizer.
        name: Name of the model, used in logs and as the cost-model cache key.
        draft: Drafting options.
        cost_model: Forward cost by tree size. ``None`` measures it on first use (a few seconds)
            and caches it per model, dtype, device and thread count.

    Example::

        generator = ReaderGenerator.from_pretrained()  # SmolLM2-135M-Instruct
        result = generator.generate(
            [{"role": "user", "content": "Who wrote Hamlet? Context: ..."}],
            documents=["Hamlet is a tragedy written by William Shakespeare ..."],
            max_new_tokens=64,
        )
        print(result.text, result.stats.tokens_per_step)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        name: str = "custom",
        draft: DraftConfig | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.draft = draft or DraftConfig()
        self.calibrator = AcceptanceCalibrator()
        self._cost_model = cost_model
        self._cost_model_lock = threading.RLock()
        self._step_cost: AdaptiveCostModel | None = None
        self._batch_cost_models: dict[int, CostModel] = {}
        self._batch_step_costs: dict[int, AdaptiveCostModel] = {}
        self._tree_attention_ok: bool | None = None
        self.datastore = None
        """Optional corpus datastore (``reader_rag.index.datastore.CorpusDatastore``) that every
        request drafts from when its own index matches only a few tokens."""
        config = model.config
        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.recycling = RecyclingTable(vocab_size, max(8, self.draft.recycle_width))
        """Top next tokens per token, learned from the logits of every verification pass."""
        self.history = (
            ResponseHistory(vocab_size, self.draft.history_tokens)
            if self.draft.history_tokens
            else None
        )
        """Earlier outputs of speculative requests, which later requests draft from."""
        self.max_positions = int(getattr(config, "max_position_embeddings", 0) or 1 << 31)
        self.sliding_window = _sliding_window(config)
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device | None = None,
        draft: DraftConfig | None = None,
    ) -> ReaderGenerator:
        """Load a model by built-in name, local folder, ``.gguf`` file or hub id (see ``models``)."""
        loaded = load_model(model, dtype=dtype, device=device)
        return cls(loaded.model, loaded.tokenizer, name=loaded.name, draft=draft)

    # -- public API ------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        documents: Sequence[str] | None = None,
        *,
        config: GenerationConfig | None = None,
        speculative: bool = True,
        **options,
    ) -> GenerationResult:
        """Generate a completion of ``prompt``, drafting from ``documents``, the prompt and output.

        ``options`` are :class:`GenerationConfig` fields (``max_new_tokens``, ``temperature``,
        ``top_k``, ``top_p``, ``repetition_penalty``, ``seed``, ``stop``); they override
        ``config``. With ``speculative=False`` the same loop decodes one token per forward pass.
        """
        config = _merge_config(config, options)
        return self.generate_ids(
            self.encode_prompt(prompt), self.encode_documents(documents), config, speculative
        )

    def stream(
        self,
        prompt: Prompt,
        documents: Sequence[str] | None = None,
        *,
        config: GenerationConfig | None = None,
        speculative: bool = True,
        **options,
    ) -> GenerationStream:
        """Like :meth:`generate`, but return an iterator of text pieces as tokens are accepted."""
        config = _merge_config(config, options)
        prompt_ids = self.encode_prompt(prompt)
        document_ids = self.encode_documents(documents)
        request = self._start(prompt_ids, document_ids, config, speculative)
        stream = GenerationStream(iter(()))

        def pieces() -> Iterator[str]:
            streamer = TextStreamer(self.tokenizer, config.stop)
            for _ in self._run(request):
                piece = streamer.push(request.generated)
                if piece:
                    yield piece
            piece = streamer.push(request.generated, final=True)
            stream.result = self._result(request)
            if piece:
                yield piece

        stream._pieces = pieces()
        return stream

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        document_ids: Sequence[Sequence[int]] = (),
        config: GenerationConfig | None = None,
        speculative: bool = True,
        oracle_ids: Sequence[int] | None = None,
    ) -> GenerationResult:
        """Generate from token ids. ``oracle_ids`` drafts the given continuation instead (a
        benchmark ceiling: the tree is that chain, sized by the cost model as if always accepted).
        """
        config = config or GenerationConfig()
        if oracle_ids is not None:
            oracle_ids = as_token_ids(oracle_ids, "oracle_ids")
        request = self._start(prompt_ids, document_ids, config, speculative)
        if oracle_ids is not None:
            request.sources = [_OracleSource(request, oracle_ids)]
        for _ in self._run(request, oracle=oracle_ids is not None):
            pass
        return self._result(request)

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        documents: Sequence[Sequence[str] | None] | None = None,
        *,
        configs: GenerationConfig | Sequence[GenerationConfig] | None = None,
        speculative: bool = True,
        compaction_threshold: float = 0.5,
        **options,
    ) -> list[GenerationResult]:
        """Generate completions of many prompts together; return one result per prompt, in order.

        Each request has its own documents, draft tree and options: ``configs`` is one
        :class:`GenerationConfig` for all or one per prompt, and ``options`` override fields of
        every config. All trees of a step are verified in one batched forward pass, sized
        together by the cost model, down to plain batched decoding when drafts would not pay.
        The KV cache is compacted when more than ``compaction_threshold`` of it is masked out.
        """
        prompts = list(prompts)
        if documents is None:
            documents = [None] * len(prompts)
        if len(documents) != len(prompts):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(documents)} document lists; pass one list "
                "(or None) per prompt"
            )
        if configs is None or isinstance(configs, GenerationConfig):
            configs = [configs] * len(prompts)
        if len(configs) != len(prompts):
            raise ValueError(
                f"got {len(prompts)} prompts but {len(configs)} configs; pass one config or one "
                "per prompt"
            )
        return self.generate_batch_ids(
            [self.encode_prompt(prompt) for prompt in prompts],
            [self.encode_documents(docs) for docs in documents],
            [_merge_config(config, options) for config in configs],
            speculative,
            compaction_threshold,
        )

    def generate_batch_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        document_ids: Sequence[Sequence[Sequence[int]]] | None = None,
        configs: GenerationConfig | Sequence[GenerationConfig] | None = None,
        speculative: bool = True,
        compaction_threshold: float = 0.5,
    ) -> list[GenerationResult]:
        """Like :meth:`generate_batch`, from token ids: one prompt and one list of documents per
        request."""
        from reader_rag.generation.batch import decode_batch

        if not prompt_ids:
            return []
        if document_ids is None:
            document_ids = [()] * len(prompt_ids)
        if configs is None or isinstance(configs, GenerationConfig):
            configs = [configs or GenerationConfig()] * len(prompt_ids)
        requests = [
            self._start(ids, docs, config, speculative)
            for ids, docs, config in zip(prompt_ids, document_ids, configs, strict=True)
        ]
        batch_stats = decode_batch(self, requests, compaction_threshold)
        for request in requests:
            self._remember(request)
        results = [self._result(request) for request in requests]
        for result in results:
            result.stats.batch_size = len(requests)
            result.stats.compaction_time_s = batch_stats.compaction_time_s
            result.stats.peak_slots = batch_stats.peak_slots
            result.stats.peak_capacity = batch_stats.peak_capacity
        return results

    def drafting_state(self) -> tuple:
        """Return a copy of what drafting learned across requests: the acceptance calibrator,
        the recycling table and the response history.

        Benchmarks that decode one prompt several times restore it before each run, so that no
        run drafts from what another run of the same prompt taught the generator.
        """
        history = None if self.history is None else self.history.snapshot()
        return self.calibrator.state(), self.recycling.snapshot(), history

    def forget_drafted_text(self) -> None:
        """Clear the recycling table and the response history, which contain tokens of earlier
        requests. The acceptance calibrator keeps its counts, which contain no tokens."""
        self.recycling.clear()
        if self.history is not None:
            self.history.clear()

    def restore_drafting_state(self, state: tuple) -> None:
        """Return drafting to a state from :meth:`drafting_state`."""
        calibrator, recycling, history = state
        self.recycling.restore(recycling)  # checked first: it raises for another generator's state
        self.calibrator.restore(calibrator)
        if self.history is not None:
            if history is None:
                self.history.clear()
            else:
                self.history.restore(history)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Tokenize a raw prompt, or render chat messages with the tokenizer's chat template."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        messages = list(prompt)
        if not all(isinstance(m, Mapping) and "role" in m and "content" in m for m in messages):
            raise ValueError(
                "prompt must be a string or a list of {'role': ..., 'content': ...} messages, "
                f"got {prompt!r:.200}"
            )
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"the tokenizer of {self.name} has no chat template, so chat messages cannot be "
                "rendered; pass the prompt as a plain string instead"
            )
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_documents(self, documents: Sequence[str] | None) -> list[list[int]]:
        """Tokenize draft documents without special tokens. Empty documents are skipped."""
        if documents is None:
            return []
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings, not one string; wrap it: [text]")
        for position, document in enumerate(documents):
            if not isinstance(document, str):
                raise TypeError(
                    f"documents must be strings, got {type(document).__name__} {document!r} at "
                    f"position {position}; pass each document's text"
                )
        texts = [d for d in documents if d.strip()]
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    @property
    def supports_tree_attention(self) -> bool:
        """Whether the model honours custom 4D attention masks, checked once on first use.

        Some attention implementations (flash attention, for one) ignore or reject a custom
        mask, which would make tree verification wrong. The check verifies a two-branch tree
        against plain causal passes over each branch. When it fails, requests decode without
        speculation and a warning says why, so outputs stay exact.
        """
        if self._tree_attention_ok is None:
            with self._cost_model_lock:
                if self._tree_attention_ok is None:
                    self._tree_attention_ok = self._check_tree_attention()
        return self._tree_attention_ok

    def _check_tree_attention(self) -> bool:
        vocab = int(self.model.config.vocab_size)
        prefix = [i % vocab for i in (11, 42, 7, 99)]
        tree = DraftTree()
        tree.add(5 % vocab, -1, 1.0, 0, "check")
        tree.add(17 % vocab, 0, 1.0, 0, "check")
        tree.add(23 % vocab, -1, 1.0, 0, "check")
        root = 3 % vocab
        try:
            with torch.inference_mode():
                cache = new_cache()
                self.model(input_ids=torch.tensor([prefix], device=self.device), cache=cache,
                           use_cache=True)
                mask, positions = tree_attention_inputs(
                    tree, len(prefix), self.dtype, self.device, self.sliding_window
                )
                ids = torch.tensor([[root, *tree.token_ids]], device=self.device)
                tree_logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True,
                ).logits[0]
                # The same pass with a plain causal mask over the tree rows: what an
                # implementation that ignores the tree mask computes.
                truncate_cache(cache, len(prefix))
                chain = DraftTree()
                for i, token in enumerate(tree.token_ids):
                    chain.add(token, i - 1, 1.0, 0, "check")
                causal_mask, _ = tree_attention_inputs(
                    chain, len(prefix), self.dtype, self.device, self.sliding_window
                )
                causal_logits = self.model(
                    input_ids=ids, attention_mask=causal_mask, position_ids=positions,
                    cache=cache, use_cache=True,
                ).logits[0]
                branches = {2: [root, tree.token_ids[0], tree.token_ids[1]],
                            3: [root, tree.token_ids[2]]}
                for row, branch in branches.items():
                    sequential = self.model(
                        input_ids=torch.tensor([prefix + branch], device=self.device)
                    ).logits[0, -1]
                    gap = float((sequential - tree_logits[row]).abs().max())
                    # float32 rounding stays below 1e-2. In 16-bit types it reaches several units,
                    # so row 3 (the row a causal mask changes) need only be much closer to its
                    # branch than the causal pass is.
                    if self.dtype == torch.float32:
                        tolerance = 1e-2
                    elif row == 3:
                        tolerance = 0.5 * float((causal_logits[row] - sequential).abs().max())
                    else:
                        tolerance = float("inf")
                    if not gap <= tolerance:
                        logger.warning(
                            "%s gives different logits with a tree attention mask (max gap %.3g "
                            "with attention implementation %r); decoding without speculation. "
                            "Load the model with attn_implementation='sdpa' or 'eager'.",
                            self.name, gap, getattr(self.model.config, "_attn_implementation", None),
                        )
                        return False
        except (RuntimeError, ValueError, TypeError) as error:
            logger.warning(
                "%s rejected a custom 4D attention mask (%s); decoding without speculation. "
                "Load the model with attn_implementation='sdpa' or 'eager'.",
                self.name, error,
            )
            return False
        return True

    @property
    def cost_model(self) -> CostModel:
        """The forward cost curve, measured once and cached on disk."""
        if self._cost_model is not None:
            return self._cost_model
        with self._cost_model_lock:  # concurrent first requests measure only once
            if self._cost_model is None:
                self._cost_model = self._measured_cost(
                    f"points={self.draft.cost_points}", self._time_forward(), self.draft.cost_points
                )
            return self._cost_model

    @property
    def step_cost(self) -> AdaptiveCostModel:
        """The cost curve that sizes single-request trees: :attr:`cost_model` with its slope
        refit to the timed steps decoded so far (drafting, forward pass and bookkeeping), including
        plain and oracle requests once the first speculative request has created it (unless
        :attr:`DraftConfig.refit_cost_slope` is false)."""
        if self._step_cost is None:
            with self._cost_model_lock:
                if self._step_cost is None:
                    self._step_cost = AdaptiveCostModel(self.cost_model)
        return self._step_cost

    def batch_cost_model(self, batch: int) -> Callable[[float], float]:
        """Return the cost curve of one batched step by tree width (root plus nodes per request).

        ``batch_cost_model(b)(w)`` is the cost of a step over ``b`` requests with ``w`` tokens
        each, relative to a plain batched step (``w == 1``). Batch sizes are rounded up to a
        power of two, and each is measured once and cached on disk. Each request attends to its
        own cache, so attention takes a larger share of a batched step than of a single one, and
        the single-request curve under-prices batched trees.

        Sizes above :data:`MAX_MEASURED_BATCH` are not measured, because timing them takes
        minutes and gigabytes. A step of ``b`` requests of width ``w`` does about the work of
        ``MAX_MEASURED_BATCH`` requests of width ``w * b / MAX_MEASURED_BATCH``, so their costs
        are read from the largest measured curve at that width.
        """
        if batch <= 1:
            return self.cost_model
        if batch > MAX_MEASURED_BATCH:
            factor = batch / MAX_MEASURED_BATCH
            largest = self.batch_cost_model(MAX_MEASURED_BATCH)
            return lambda width: largest(width * factor) / largest(factor)
        bucket = 1 << (batch - 1).bit_length()
        model = self._batch_cost_models.get(bucket)
        if model is not None:
            return model
        with self._cost_model_lock:
            if bucket not in self._batch_cost_models:
                self._batch_cost_models[bucket] = self._measured_cost(
                    f"batch={bucket}|widths={BATCH_COST_WIDTHS}",
                    self._time_batch_forward(bucket),
                    BATCH_COST_WIDTHS,
                )
            return self._batch_cost_models[bucket]

    def batch_step_cost(self, batch: int) -> Callable[[float], float]:
        """Return the cost curve that sizes the trees of one batched step of ``batch`` requests.

        For 2 to :data:`MAX_MEASURED_BATCH` requests, this is :meth:`batch_cost_model` with its
        slope refit, as :attr:`step_cost` refits the single-request curve, to the timed steps of
        batches of exactly the curve's size (a power of two). Smaller batches in the same bucket
        do less work per step and would bias the fit, so they use it without adding to it. One
        request uses :attr:`step_cost`. Larger batches, and every batch when
        :attr:`DraftConfig.refit_cost_slope` is false, use the measured curves as they are.
        """
        if batch <= 1:
            return self.step_cost
        if batch > MAX_MEASURED_BATCH or not self.draft.refit_cost_slope:
            return self.batch_cost_model(batch)
        bucket = 1 << (batch - 1).bit_length()
        model = self._batch_step_costs.get(bucket)
        if model is None:
            measured = self.batch_cost_model(bucket)
            with self._cost_model_lock:
                model = self._batch_step_costs.setdefault(bucket, AdaptiveCostModel(measured))
        return model

    def measure_costs(self, max_batch_size: int = 1) -> None:
        """Measure (or load from the cache) every cost curve that batches of up to
        ``max_batch_size`` requests use, so that no timed request pays for a measurement.

        Requests leave a batch as they finish, so a batch passes through every smaller size.
        """
        _ = self.cost_model
        size = 2
        while size < 2 * min(max_batch_size, MAX_MEASURED_BATCH):
            self.batch_cost_model(size)
            size *= 2

    def _measured_cost(self, variant: str, time_forward, sizes: Sequence[int]) -> CostModel:
        attention = getattr(self.model.config, "_attn_implementation", None)
        key = (
            f"{self.name}|{self.dtype}|{self.device}|threads={torch.get_num_threads()}"
            f"|torch={torch.__version__}|attention={attention}|{variant}"
        )
        cached = CostModel.load_cached(key)
        if cached is None:
            logger.info("measuring the forward cost of %s once (%s)", self.name, variant)
            cached = CostModel.measure(time_forward, sizes)
            cached.save(key)
        return cached

    # -- the decoding loop -----------------------------------------------------------------------

    def _start(
        self,
        prompt_ids: Sequence[int],
        document_ids: Sequence[Sequence[int]],
        config: GenerationConfig,
        speculative: bool,
    ) -> _Request:
        prompt_ids = as_token_ids(prompt_ids, "prompt_ids")
        if not prompt_ids:
            raise ValueError("the prompt is empty; pass at least one token")
        vocab_size = self.recycling.vocab_size
        outside = [t for t in prompt_ids if not 0 <= t < vocab_size]
        if outside:
            raise ValueError(
                f"prompt token id {outside[0]} is outside the vocabulary of {self.name} "
                f"(0 to {vocab_size - 1}); encode the prompt with this generator's tokenizer"
            )
        if len(prompt_ids) >= self.max_positions:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens, but {self.name} accepts at most "
                f"{self.max_positions} positions including the output; shorten the prompt or "
                "retrieve fewer documents"
            )
        max_new_tokens = config.max_new_tokens
        room = self.max_positions - len(prompt_ids)
        if max_new_tokens > room:
            logger.warning(
                "max_new_tokens=%d exceeds the %d positions left after the %d-token prompt; "
                "generating at most %d tokens",
                max_new_tokens, room, len(prompt_ids), room,
            )
            max_new_tokens = room

        document_ids = _document_token_ids(document_ids, vocab_size, self.name)
        index = RequestIndex(key_length=4, max_occurrences=self.draft.max_occurrences)
        budget = self.draft.max_indexed_tokens
        for ids in document_ids:
            if budget <= 0:
                logger.warning(
                    "documents exceed max_indexed_tokens=%d; the rest are not used for drafting",
                    self.draft.max_indexed_tokens,
                )
                break
            if len(ids) > budget:
                logger.warning(
                    "documents exceed max_indexed_tokens=%d; a %d-token document is cut to its "
                    "first %d tokens for drafting",
                    self.draft.max_indexed_tokens, len(ids), budget,
                )
            index.add_document(ids[:budget])
            budget -= len(ids)
        index.extend(prompt_ids)

        sources: list[DraftSource] = []
        if speculative and self.draft.max_nodes != 0 and self.supports_tree_attention:
            if self.draft.max_nodes is None:
                _ = self.step_cost  # measured now, so the first step's draft time excludes it
            request_source = RequestIndexSource(
                index,
                self.draft.min_match_length,
                self.draft.max_match_length,
                self.draft.max_occurrences,
            )
            sources.append(request_source)
            if self.datastore is not None:
                sources.append(
                    CorpusSource(
                        self.datastore, request_source, max_match_length=self.draft.max_match_length
                    )
                )
            if self.history is not None:
                sources.append(
                    HistorySource(
                        self.history, request_source, max_match_length=self.draft.max_match_length
                    )
                )
        eos = config.eos_token_ids
        if eos is None:
            eos = _eos_ids(self.model, self.tokenizer)
        request = _Request(
            config=config,
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens,
            index=index,
            sources=sources,
            processors=_processors(config),
            rng=_rng(config),
            stop=StopMatcher(self.tokenizer, config.stop),
            eos=frozenset(eos),
        )
        request.stats.prompt_tokens = len(prompt_ids)
        request.stats.indexed_tokens = len(index)
        return request

    def _run(self, request: _Request, oracle: bool = False) -> Iterator[list[int]]:
        """Decode until the request finishes, yielding the tokens emitted by each step."""
        start = time.perf_counter()
        # Inference mode is per thread, so it is entered for each step rather than around the
        # yields: a stream may be resumed from another thread (an async framework's executor).
        try:
            with torch.inference_mode():
                emitted = self._prefill(request, oracle)
            yield emitted
            while request.finish_reason is None:
                with torch.inference_mode():
                    emitted = self._step(request, oracle)
                yield emitted
            if not oracle:
                self._remember(request)
        finally:
            request.stats.total_time_s = time.perf_counter() - start

    def _prefill(self, request: _Request, oracle: bool = False) -> list[int]:
        start = time.perf_counter()
        input_ids = torch.tensor([request.prompt_ids], device=self.device)
        recycle = bool(self.draft.recycle_width and request.sources and not oracle)
        with FinalHiddenStates(self.model, recycle and self.draft.prompt_seed_tokens > 0) as final:
            output = self.model(
                input_ids=input_ids, cache=request.cache, use_cache=True, logits_to_keep=1
            )
        request.stats.forward_passes += 1
        logits = output.logits[0, -1:]
        if recycle:
            hidden = final.hidden[0] if final.hidden is not None else None
            self.recycle_prompt(request.prompt_ids, hidden, logits)
        request.stats.prefill_time_s = time.perf_counter() - start
        token = self._choose(request, logits, 0, [])
        return self._emit(request, [token])

    def recycle_prompt(
        self, prompt_ids: Sequence[int], hidden: torch.Tensor | None, logits: torch.Tensor
    ) -> None:
        """Store a prefill's rows in the recycling table: the seed rows of the prompt (when
        ``hidden`` is given), then the exact ``logits`` row of its last token."""
        if hidden is not None:
            rows = self.prompt_seed_rows(prompt_ids, hidden)
            if rows is not None:
                self.recycling.update_rows(*rows)
        self.recycling.update(prompt_ids[-1:], logits)

    def prompt_seed_rows(
        self, prompt_ids: Sequence[int], hidden: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Return the recycling rows that the prefill stores for the prompt, or ``None`` when
        the model's output layer cannot score them.

        ``hidden`` is the prompt's final hidden states, shape ``(len(prompt_ids), hidden)``.
        Scored over the vocabulary that :attr:`DraftConfig.prompt_seed_tokens` bounds; see
        :func:`~reader_rag.drafting.recycling.prompt_rows`.
        """
        head = self.model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        bias = getattr(head, "bias", None)
        usable = (
            isinstance(weight, torch.Tensor)
            and weight.dim() == 2
            and weight.is_floating_point()
            and weight.device.type != "meta"
            and weight.shape[0] == self.recycling.vocab_size
            and hidden.shape[0] == len(prompt_ids)
        )
        if not usable:
            return None  # a quantized, offloaded or unusual head; drafting goes on without seeds
        return prompt_rows(
            prompt_ids, hidden, weight, self.draft.prompt_seed_tokens, self.recycling.k,
            bias if isinstance(bias, torch.Tensor) else None,
        )

    def _remember(self, request: _Request) -> None:
        """Add a finished speculative request's output to the response history."""
        if self.history is not None and request.sources:
            self.history.record(request.generated)

    def _step(self, request: _Request, oracle: bool) -> list[int]:
        stats = request.stats
        remaining = request.max_new_tokens - len(request.generated)
        # The bonus token always comes on top of the accepted path, so drafts deeper than
        # remaining - 1 could never be emitted.
        max_depth = min(self.draft.max_depth, remaining - 1)

        step_start = time.perf_counter()
        tree, buckets = self._draft(request, max_depth, oracle)
        stats.draft_time_s += time.perf_counter() - step_start

        start = time.perf_counter()
        prefix_length = request.committed_length
        input_ids = torch.tensor([[request.generated[-1], *tree.token_ids]], device=self.device)
        mask, position_ids = tree_attention_inputs(
            tree, prefix_length, self.dtype, self.device, self.sliding_window
        )
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=request.cache,
            use_cache=True,
        )
        logits = output.logits[0]  # (q, vocab)
        if self.draft.recycle_width and request.sources and not oracle:
            self.recycling.update(input_ids[0], logits)
        stats.forward_passes += 1
        stats.drafted_nodes += len(tree)

        children = tree.children()
        path, bonus = walk_tree(
            children, lambda row, path: self._choose(request, logits[row : row + 1], row, path, tree)
        )
        commit_kv(request.cache, prefix_length, [0, *(node + 1 for node in path)])
        stats.verify_time_s += time.perf_counter() - start

        self._record_acceptance(request, tree, buckets, children, path)
        emitted = self._emit(request, [*(tree.token_ids[n] for n in path), bonus])
        if self._step_cost is not None and self.draft.refit_cost_slope:
            # The whole step counts: drafting and bookkeeping are paid once per step, like the
            # weight reads, so they make each extra node relatively cheaper.
            self._step_cost.observe(len(tree) + 1, time.perf_counter() - step_start)
        return emitted

    def _record_acceptance(
        self,
        request: _Request,
        tree: DraftTree,
        buckets: list[Bucket],
        children: list[dict[int, int]],
        path: list[int],
    ) -> None:
        """Feed the step's outcome to the calibrator and the request's counters."""
        if buckets:
            self.calibrator.update(_outcomes(children, path, buckets))
        stats = request.stats
        for node in path:
            source = tree.sources[node]
            stats.accepted_by_source[source] = stats.accepted_by_source.get(source, 0) + 1
        stats.accepted_draft_tokens += len(path)

    def _draft(
        self, request: _Request, max_depth: int, oracle: bool, size_by_cost: bool = True
    ) -> tuple[DraftTree, list[Bucket]]:
        """Draft the tree of one step. With ``size_by_cost``, the tree is cut to the size that
        maximizes expected tokens per unit of forward cost for this request alone; the batch loop
        sizes all trees of a step together instead."""
        if not request.sources or max_depth < 1:
            return DraftTree(), []
        candidates = [source.propose(max_depth) for source in request.sources]
        if oracle:
            if not candidates[0]:
                return DraftTree(), []
            size = choose_tree_size([1.0] * max_depth, self.step_cost)
            tokens = candidates[0][0].tokens[:size]
            tree = DraftTree()
            for i, token in enumerate(tokens):
                tree.add(token, i - 1, 1.0, 0, "oracle")
            return tree, []
        if not any(candidates) and not self.draft.recycle_width:
            return DraftTree(), []
        max_nodes = self.draft.max_nodes
        step_cost = None
        if max_nodes is None:
            max_nodes = self.step_cost.max_tokens - 1
            if size_by_cost:
                step_cost = self.step_cost
        return build_draft_tree(
            candidates,
            self.calibrator,
            max_nodes,
            max_depth,
            self.draft.probability_floor,
            step_cost,
            recycling=self.recycling if self.draft.recycle_width else None,
            root_token=request.generated[-1],
            recycle_width=self.draft.recycle_width,
        )

    def _choose(
        self,
        request: _Request,
        logits: torch.Tensor,
        row: int,
        path: list[int],
        tree: DraftTree | None = None,
    ) -> int:
        """Return the target's token from one row of logits ``(1, vocab)``.

        ``path`` lists the accepted nodes above ``row``; with a repetition penalty or sampling,
        they extend the context that the logits processors see.
        """
        if request.processors is None:
            return int(logits[0].argmax())
        context = request.prompt_ids + request.generated
        if tree is not None:
            context = context + [tree.token_ids[node] for node in path]
        input_ids = torch.tensor([context], device=logits.device)
        scores = request.processors(input_ids, logits.float())
        if request.rng is None:
            return int(scores[0].argmax())
        # The generator lives on the CPU so that seeded runs match across devices.
        probabilities = torch.softmax(scores[0], dim=-1).cpu()
        return int(torch.multinomial(probabilities, 1, generator=request.rng))

    def _emit(self, request: _Request, tokens: list[int]) -> list[int]:
        """Append tokens one at a time, stopping exactly where plain decoding would."""
        emitted = []
        for token in tokens:
            request.generated.append(token)
            emitted.append(token)
            if token in request.eos:
                request.finish_reason = "eos"
            elif request.stop.matches(request.generated):
                request.finish_reason = "stop"
            elif len(request.generated) >= request.max_new_tokens:
                request.finish_reason = "length"
            if request.finish_reason is not None:
                break
        request.index.extend(emitted)
        request.stats.new_tokens = len(request.generated)
        return emitted

    def _result(self, request: _Request) -> GenerationResult:
        text = self.tokenizer.decode(request.generated, skip_special_tokens=True)
        text, _ = cut_at_stop(text, request.config.stop)
        return GenerationResult(
            text=text,
            token_ids=list(request.generated),
            finish_reason=request.finish_reason or "length",
            stats=request.stats,
        )

    def _time_forward(self, prefix_length: int = 512):
        """Return a function that runs one forward pass over n tokens after a cached prefix."""
        vocab = int(self.model.config.vocab_size)
        generator = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, vocab, (1, prefix_length), generator=generator)
        cache = new_cache()
        with torch.inference_mode():
            self.model(input_ids=prefix.to(self.device), cache=cache, use_cache=True, logits_to_keep=1)

        def time_forward(n: int) -> None:
            tree = DraftTree()
            for i in range(n - 1):
                tree.add(int(prefix[0, i]), i - 1, 1.0, 0, "timing")
            ids = torch.tensor([[0, *tree.token_ids]], device=self.device)
            mask, positions = tree_attention_inputs(
                tree, prefix_length, self.dtype, self.device, self.sliding_window
            )
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                    use_cache=True,
                ).logits
                logits.argmax(-1).tolist()  # include the host sync every real step has
            truncate_cache(cache, prefix_length)

        return time_forward


    def _time_batch_forward(self, batch: int, prefix_length: int = 1000):
        """Return a function that runs one batched forward pass of ``batch`` chains of n tokens
        after cached prefixes of ``prefix_length`` tokens.

        The cached prefixes hold random keys and values instead of a prefill, because a prefill
        would take longer than all the timed passes together. A pass costs the same whatever the
        values are. With the default length, a prefix and the widest timed pass fit in the
        cache's initial 1,024 slots, so the buffers never double while timing.
        """
        config = self.model.config
        vocab = int(config.vocab_size)
        generator = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, vocab, (batch, prefix_length), generator=generator)
        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        cache = new_cache()
        shape = (batch, kv_heads, prefix_length, head_dim)
        for layer in range(int(config.num_hidden_layers)):
            states = torch.randn(shape, generator=generator).to(self.device, self.dtype)
            cache.update(states, states.clone(), layer)

        def time_forward(n: int) -> None:
            tree = DraftTree()
            for i in range(n - 1):
                tree.add(int(prefix[0, i]), i - 1, 1.0, 0, "timing")
            mask, positions = tree_attention_inputs(
                tree, prefix_length, self.dtype, self.device, self.sliding_window
            )
            if isinstance(mask, dict):
                mask = {name: m.expand(batch, -1, -1, -1) for name, m in mask.items()}
            else:
                mask = mask.expand(batch, -1, -1, -1)
            ids = prefix[:, :n].to(self.device)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions.expand(batch, -1),
                    cache=cache, use_cache=True,
                ).logits
                logits.argmax(-1).tolist()
            truncate_cache(cache, prefix_length)

        return time_forward


def _merge_config(config: GenerationConfig | None, options: Mapping) -> GenerationConfig:
    if not options:
        return config or GenerationConfig()
    if config is None:
        return GenerationConfig(**options)
    return replace(config, **options)


def _processors(config: GenerationConfig) -> LogitsProcessorList | None:
    """Return the Hugging Face logits processors that ``generate`` would apply, or ``None``."""
    processors = LogitsProcessorList()
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if config.do_sample:
        if config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k > 0:
            processors.append(TopKLogitsWarper(config.top_k))
        if config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p))
    if not processors and not config.do_sample:
        return None
    return processors


def _rng(config: GenerationConfig) -> torch.Generator | None:
    if not config.do_sample:
        return None
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    return torch.Generator().manual_seed(seed)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def _sliding_window(config) -> int | None:
    layer_types = getattr(config, "layer_types", None) or ()
    if "sliding_attention" in layer_types and getattr(config, "sliding_window", None):
        return int(config.sliding_window)
    return None


def _outcomes(
    children: list[dict[int, int]], path: list[int], buckets: list[Bucket]
) -> list[tuple[Bucket, bool]]:
    """Return (bucket, accepted) for every node whose parent the walk reached."""
    accepted = set(path)
    tested = list(children[0].values())
    for node in path:
        tested.extend(children[node + 1].values())
    return [(buckets[node], node in accepted) for node in tested]
