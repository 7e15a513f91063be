"""Tests for the validation of GenerationConfig and DraftConfig."""

from __future__ import annotations

import math
import re

import pytest

from reader_rag.config import DraftConfig, GenerationConfig


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens", "0"),
        ({"max_new_tokens": -5}, "max_new_tokens", "-5"),
        ({"max_new_tokens": 2.5}, "max_new_tokens", "2.5"),
        ({"max_new_tokens": True}, "max_new_tokens", "True"),
        ({"temperature": -0.5}, "temperature", "-0.5"),
        ({"temperature": math.nan}, "temperature", "nan"),
        ({"temperature": math.inf}, "temperature", "inf"),
        ({"top_p": 0.0}, "top_p", "0.0"),
        ({"top_p": 1.5}, "top_p", "1.5"),
        ({"top_p": -0.1}, "top_p", "-0.1"),
        ({"top_k": -1}, "top_k", "-1"),
        ({"top_k": 3.0}, "top_k", "3.0"),
        ({"repetition_penalty": 0.0}, "repetition_penalty", "0.0"),
        ({"repetition_penalty": -1.2}, "repetition_penalty", "-1.2"),
        ({"stop": ("ok", "")}, "stop", "('ok', '')"),
    ],
)
def test_generation_config_invalid(options, field, value):
    with pytest.raises(ValueError) as error:
        GenerationConfig(**options)

    message = str(error.value)
    assert field in message
    assert value in message


@pytest.mark.parametrize(
    ("options", "field", "value"),
    [
        ({"max_nodes": -1}, "max_nodes", "-1"),
        ({"max_depth": 0}, "max_depth", "0"),
        ({"min_match_length": 0}, "min_match_length", "0"),
        ({"min_match_length": 5, "max_match_length": 3}, "max_match_length", "3"),
        ({"max_occurrences": 0}, "max_occurrences", "0"),
        ({"probability_floor": 1.0}, "probability_floor", "1.0"),
        ({"probability_floor": -0.2}, "probability_floor", "-0.2"),
        ({"max_indexed_tokens": 0}, "max_indexed_tokens", "0"),
        ({"cost_points": (2, 4)}, "cost_points", "(2, 4)"),
        ({"cost_points": ()}, "cost_points", "()"),
    ],
)
def test_draft_config_invalid(options, field, value):
    with pytest.raises(ValueError) as error:
        DraftConfig(**options)

    message = str(error.value)
    assert field in message
    assert value in message


def test_generation_config_defaults_valid():
    config = GenerationConfig()

    assert config.do_sample is False
    assert config.stop == ()


def test_generation_config_boundaries_valid():
    config = GenerationConfig(max_new_tokens=1, temperature=0.0, top_p=1.0, top_k=0)

    assert config.max_new_tokens == 1
    assert config.top_p == 1.0


def test_generation_config_sampling_flag():
    assert GenerationConfig(temperature=0.7).do_sample is True


def test_generation_config_stop_string_wrapped():
    assert GenerationConfig(stop="\n\n").stop == ("\n\n",)
    assert GenerationConfig(stop=["A", "B"]).stop == ("A", "B")


def test_draft_config_zero_nodes_valid():
    config = DraftConfig(max_nodes=0, probability_floor=0.0)

    assert config.max_nodes == 0


def test_generation_config_message_names_range():
    with pytest.raises(ValueError, match=re.escape("top_p must be in (0, 1]")):
        GenerationConfig(top_p=2.0)
