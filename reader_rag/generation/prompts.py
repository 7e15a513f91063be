"""Prompt templates for question answering over documents."""

from __future__ import annotations

import logging
from collections.abc import Sequence

__all__ = ["DEFAULT_TEMPLATE", "build_rag_messages"]

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = (
    "Answer the question using the documents below.\n\n{documents}\n\nQuestion: {question}"
)
"""Template of the user message; ``{documents}`` are joined by blank lines."""


def build_rag_messages(
    question: str,
    documents: Sequence[str],
    tokenizer,
    max_prompt_tokens: int,
    template: str = DEFAULT_TEMPLATE,
) -> tuple[list[dict[str, str]], int]:
    """Return chat messages that put as many whole documents into the prompt as fit.

    Documents are taken in order while the rendered prompt stays within ``max_prompt_tokens``
    tokens; the rest are left out of the prompt (they can still be passed as draft documents).
    Returns the messages and the number of documents included. Raises ``ValueError`` when even
    the question alone does not fit.
    """
    if not question.strip():
        raise ValueError("the question is empty; pass the question text")
    included: list[str] = []
    for document in documents:
        candidate = [*included, document]
        if _length(tokenizer, template, question, candidate) > max_prompt_tokens:
            break
        included = candidate
    if _length(tokenizer, template, question, included) > max_prompt_tokens:
        raise ValueError(
            f"the question alone needs more than {max_prompt_tokens} prompt tokens; shorten it"
        )
    if len(included) < len(documents):
        logger.warning(
            "only %d of %d documents fit in the %d-token prompt; the rest are used for drafting "
            "only",
            len(included), len(documents), max_prompt_tokens,
        )
    return _messages(template, question, included), len(included)


def _messages(template: str, question: str, documents: Sequence[str]) -> list[dict[str, str]]:
    content = template.format(documents="\n\n".join(documents), question=question)
    return [{"role": "user", "content": content}]


def _length(tokenizer, template: str, question: str, documents: Sequence[str]) -> int:
    messages = _messages(template, question, documents)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = messages[0]["content"]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
