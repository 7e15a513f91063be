"""Constructor checks shared by the LangChain and LlamaIndex ``ReaderLLM`` classes.

Both classes are pydantic models, whose base ignores unknown keywords, so a misspelled option
would silently keep its default.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

from reader_rag.config import DraftConfig

__all__ = ["check_llm_constructor"]


def check_llm_constructor(cls: type, generator: Any, draft: Any, data: dict[str, Any]) -> None:
    """Raise for constructor keywords that ``cls`` (a pydantic model) does not take, and for a
    ``draft`` that is not a :class:`DraftConfig` or comes with a ready ``generator``."""
    _reject_unknown_keywords(cls, data)
    _check_draft(generator, draft)


def _reject_unknown_keywords(cls: type, data: dict[str, Any]) -> None:
    supported = {"generator", "draft"}
    for name, field in cls.model_fields.items():
        supported.add(name)
        supported.update(_alias_names(field.alias))
        supported.update(_alias_names(field.validation_alias))
    unknown = sorted(set(data) - supported)
    if not unknown:
        return
    close = [match for name in unknown for match in get_close_matches(name, supported, n=1)]
    hint = f" (did you mean {close}?)" if close else ""
    raise TypeError(
        f"{cls.__name__}() got unsupported keyword arguments {unknown}{hint}; "
        f"supported: {sorted(supported)}"
    )


def _alias_names(alias: Any) -> list[str]:
    """Return the keyword names that a pydantic alias (str, AliasPath or AliasChoices) accepts."""
    if alias is None:
        return []
    if isinstance(alias, str):
        return [alias]
    # AliasPath converts to one path and AliasChoices to a list of paths. A path starts with
    # the keyword name.
    paths = alias.convert_to_aliases()
    if paths and not isinstance(paths[0], list):
        paths = [paths]
    return [str(path[0]) for path in paths]


def _check_draft(generator: Any, draft: Any) -> None:
    if draft is None:
        return
    if not isinstance(draft, DraftConfig):
        raise TypeError(f"draft must be a reader_rag.DraftConfig, got {type(draft).__name__}")
    if generator is not None:
        raise ValueError(
            "draft applies only to the generator that ReaderLLM loads itself, so it cannot be "
            "combined with generator=; build the generator with "
            "ReaderGenerator.from_pretrained(model, draft=draft) instead"
        )
