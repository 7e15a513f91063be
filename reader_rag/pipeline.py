"""Retrieval-augmented generation over a document store: retrieve, build the prompt, draft.

The retrieved chunks play two parts. The ones that fit go into the prompt, and all of them are
draft documents for the request index. The store's corpus datastore, when its tokenizer is the
model's, is a second draft source for every request (``ReaderGenerator.datastore``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from reader_rag.generation.prompts import DEFAULT_TEMPLATE, build_rag_messages
from reader_rag.retrieval.embeddings import tokenizer_id
from reader_rag.retrieval.store import DocumentStore, SearchResult

__all__ = [
    "RetrievedPrompt",
    "build_retrieved_prompt",
    "datastore_mismatch",
    "prompt_budget",
    "render_prompt",
    "retrieve_prompts",
    "use_store_datastore",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievedPrompt:
    """The prompt built for one question from the chunks retrieved for it.

    Attributes:
        question: The question text.
        messages: Chat messages with the question and the first ``included`` chunks.
        results: The retrieved chunks with their scores, best first.
        included: Number of leading ``results`` whose text is in the prompt; the rest did not
            fit and serve only as draft documents.
    """

    question: str
    messages: list[dict[str, str]]
    results: list[SearchResult]
    included: int

    @property
    def documents(self) -> list[str]:
        """Texts of all retrieved chunks, the draft documents of the request."""
        return [result.chunk.text for result in self.results]


def prompt_budget(max_positions: int, max_new_tokens: int) -> int:
    """Return the prompt tokens left after reserving room for the output.

    The reserve is ``max_new_tokens``, but at most half of the ``max_positions`` context, so a
    large ``max_new_tokens`` still leaves room for documents.
    """
    return max_positions - min(max_new_tokens, max_positions // 2)


def build_retrieved_prompt(
    question: str,
    results: Sequence[SearchResult],
    tokenizer,
    max_prompt_tokens: int,
    template: str = DEFAULT_TEMPLATE,
) -> RetrievedPrompt:
    """Build the prompt of ``question`` from retrieved chunks with ``build_rag_messages``.

    Raises:
        ValueError: the question is empty or alone exceeds ``max_prompt_tokens``.
    """
    texts = [result.chunk.text for result in results]
    messages, included = build_rag_messages(question, texts, tokenizer, max_prompt_tokens, template)
    return RetrievedPrompt(question, messages, list(results), included)


def retrieve_prompts(
    store: DocumentStore,
    questions: Sequence[str],
    tokenizer,
    max_prompt_tokens: int,
    k: int = 4,
    template: str = DEFAULT_TEMPLATE,
) -> list[RetrievedPrompt]:
    """Retrieve the top ``k`` chunks for every question in one batch and build their prompts.

    Raises:
        ValueError: ``k`` is below 1, or a question is empty or too long for the budget.
    """
    empty = [i for i, question in enumerate(questions) if not question.strip()]
    if empty:
        raise ValueError(f"question {empty[0]} is empty; pass the question text")
    batches = store.search_batch(list(questions), k)
    return [
        build_retrieved_prompt(question, results, tokenizer, max_prompt_tokens, template)
        for question, results in zip(questions, batches)
    ]


def render_prompt(tokenizer, messages: list[dict[str, str]]):
    """Return ``messages`` for a tokenizer with a chat template, else the user message text."""
    if getattr(tokenizer, "chat_template", None):
        return messages
    return messages[0]["content"]


def datastore_mismatch(store: DocumentStore, tokenizer) -> str | None:
    """Return why the store's datastore cannot draft for ``tokenizer``, or None when it can.

    The datastore contains token ids, so it is usable only when it was built with the same
    tokenizer: the same ``tokenizer_id`` and the same vocabulary size.
    """
    if store.datastore is None:
        return f"store {str(store.path)!r} has no corpus datastore"
    expected = store.datastore.tokenizer_id
    given = tokenizer_id(tokenizer)
    if expected != given:
        return (
            f"the datastore of store {str(store.path)!r} was built with tokenizer {expected!r}, "
            f"but the model's tokenizer is {given!r}; rebuild the store with "
            "`reader-rag index build --model MODEL` for this model"
        )
    if store.datastore.vocab_size != len(tokenizer):
        return (
            f"the datastore of store {str(store.path)!r} has vocabulary size "
            f"{store.datastore.vocab_size}, but the model's tokenizer has {len(tokenizer)}; "
            "rebuild the store for this model"
        )
    return None


def use_store_datastore(generator, store: DocumentStore) -> bool:
    """Set ``generator.datastore`` to the store's datastore when it fits the model's tokenizer.

    Returns True when the datastore is attached. Otherwise logs a warning (unless the store has
    no datastore at all), sets ``generator.datastore`` to None and returns False.
    """
    reason = datastore_mismatch(store, generator.tokenizer)
    if reason is None:
        generator.datastore = store.datastore
        return True
    if store.datastore is not None:
        logger.warning("not drafting from the corpus datastore: %s", reason)
    else:
        logger.info("not drafting from a corpus datastore: %s", reason)
    generator.datastore = None
    return False
