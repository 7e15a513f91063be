"""Constructor checks shared by the LangChain and LlamaIndex ``ReaderLLM`` classes."""

from __future__ import annotations

import pytest
from langchain_reader import ReaderLLM as LangChainReaderLLM
from llama_index.llms.reader import ReaderLLM as LlamaIndexReaderLLM

from reader_rag import DraftConfig

LLM_CLASSES = [LangChainReaderLLM, LlamaIndexReaderLLM]


@pytest.mark.parametrize("llm_class", LLM_CLASSES)
def test_unknown_constructor_keyword_raises(llm_class, reader_generator) -> None:
    with pytest.raises(TypeError) as raised:
        llm_class(generator=reader_generator, max_new_token=5, temprature=0.9)

    message = str(raised.value)
    supported = message.split("supported:")[1]
    assert f"{llm_class.__name__}() got unsupported keyword arguments" in message
    assert "['max_new_token', 'temprature']" in message
    assert "did you mean ['max_new_tokens', 'temperature']?" in message
    assert "'max_new_tokens'" in supported
    assert "'draft'" in supported


@pytest.mark.parametrize("llm_class", LLM_CLASSES)
def test_draft_with_generator_raises(llm_class, reader_generator) -> None:
    with pytest.raises(ValueError, match="build the generator with"):
        llm_class(generator=reader_generator, draft=DraftConfig(max_nodes=0))


@pytest.mark.parametrize("llm_class", LLM_CLASSES)
def test_draft_of_wrong_type_raises(llm_class) -> None:
    with pytest.raises(TypeError, match="draft must be a reader_rag.DraftConfig, got dict"):
        llm_class(draft={"max_nodes": 0})


@pytest.mark.parametrize("llm_class", LLM_CLASSES)
def test_subclass_named_in_keyword_error(llm_class, reader_generator) -> None:
    subclass = type("QuizLLM", (llm_class,), {})

    with pytest.raises(TypeError, match=r"QuizLLM\(\) got unsupported keyword arguments"):
        subclass(generator=reader_generator, max_new_token=5)
