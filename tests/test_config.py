"""Tests for the validation of GenerationConfig and DraftConfig."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from reader_rag.config import MAX_RECYCLE_WIDTH, DraftConfig, GenerationConfig


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
        ({"temperature": "0.5"}, "temperature", "'0.5'"),
        ({"temperature": True}, "temperature", "True"),
        ({"top_p": "0.5"}, "top_p", "'0.5'"),
        ({"top_p": math.nan}, "top_p", "nan"),
        ({"repetition_penalty": "1.1"}, "repetition_penalty", "'1.1'"),
        ({"seed": 1.5}, "seed", "1.5"),
        ({"seed": True}, "seed", "True"),
        ({"seed": "7"}, "seed", "'7'"),
        ({"seed": 2**64}, "seed", str(2**64)),
        ({"eos_token_ids": (-1,)}, "eos_token_ids", "-1"),
        ({"eos_token_ids": (2, 1.5)}, "eos_token_ids", "1.5"),
        ({"eos_token_ids": [True]}, "eos_token_ids", "True"),
        ({"eos_token_ids": "2"}, "eos_token_ids", "'2'"),
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
        ({"max_nodes": 1.5}, "max_nodes", "1.5"),
        ({"max_nodes": "8"}, "max_nodes", "'8'"),
        ({"max_nodes": True}, "max_nodes", "True"),
        ({"max_depth": 4.0}, "max_depth", "4.0"),
        ({"max_depth": True}, "max_depth", "True"),
        ({"min_match_length": 1.5}, "min_match_length", "1.5"),
        ({"max_match_length": 32.0}, "max_match_length", "32.0"),
        ({"max_match_length": "32"}, "max_match_length", "'32'"),
        ({"max_occurrences": 2.5}, "max_occurrences", "2.5"),
        ({"max_occurrences": False}, "max_occurrences", "False"),
        ({"max_indexed_tokens": 1e6}, "max_indexed_tokens", "1000000.0"),
        ({"cost_points": (1, -5)}, "cost_points", "-5"),
        ({"cost_points": (1, 2.5)}, "cost_points", "2.5"),
        ({"cost_points": (1, True)}, "cost_points", "True"),
        ({"cost_points": (1, 0)}, "cost_points", "0"),
        ({"cost_points": (1, 4096)}, "cost_points", "4096"),
        ({"cost_points": 4}, "cost_points", "4"),
        ({"cost_points": "124"}, "cost_points", "'124'"),
        ({"recycle_width": 65}, "recycle_width", "65"),
        ({"recycle_width": 10_000}, "recycle_width", "10000"),
        ({"probability_floor": "0.1"}, "probability_floor", "'0.1'"),
        ({"probability_floor": math.nan}, "probability_floor", "nan"),
        ({"probability_floor": False}, "probability_floor", "False"),
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


def test_cost_points_entry_message_not_missing_one():
    with pytest.raises(ValueError) as error:
        DraftConfig(cost_points=(1, -5))

    message = str(error.value)
    assert "must contain integers of at least 1" in message
    assert "must include 1" not in message


def test_draft_config_accepts_integer_types():
    config = DraftConfig(
        max_nodes=np.int64(8), max_depth=np.int32(4), cost_points=[1, np.int64(2), 4]
    )

    assert config.max_nodes == 8
    assert config.max_depth == 4
    assert config.cost_points == (1, 2, 4)


def test_recycle_width_limit_valid():
    assert DraftConfig(recycle_width=MAX_RECYCLE_WIDTH).recycle_width == MAX_RECYCLE_WIDTH
    assert DraftConfig(recycle_width=0).recycle_width == 0


def test_probability_floor_integer_zero_valid():
    assert DraftConfig(probability_floor=0).probability_floor == 0


def test_generation_config_seed_valid():
    assert GenerationConfig(seed=None).seed is None
    assert GenerationConfig(seed=0).seed == 0
    assert GenerationConfig(seed=-1).seed == -1
    assert GenerationConfig(seed=2**64 - 1).seed == 2**64 - 1
    assert GenerationConfig(seed=np.int64(5)).seed == 5


def test_eos_token_ids_normalized_to_tuple():
    assert GenerationConfig().eos_token_ids is None
    assert GenerationConfig(eos_token_ids=[2, 0]).eos_token_ids == (2, 0)
    assert GenerationConfig(eos_token_ids=2).eos_token_ids == (2,)
    assert GenerationConfig(eos_token_ids=iter([3, 4])).eos_token_ids == (3, 4)
    assert GenerationConfig(eos_token_ids=np.array([5, 6])).eos_token_ids == (5, 6)
    assert GenerationConfig(eos_token_ids=torch.tensor([7])).eos_token_ids == (7,)
    assert GenerationConfig(eos_token_ids=()).eos_token_ids == ()


def test_eos_token_ids_stored_as_python_ints():
    ids = GenerationConfig(eos_token_ids=np.array([5, 6])).eos_token_ids

    assert all(type(token_id) is int for token_id in ids)


def test_generation_config_numeric_types_valid():
    config = GenerationConfig(temperature=1, top_p=np.float64(0.9), repetition_penalty=1)

    assert config.do_sample is True
    assert config.top_p == 0.9


def test_numpy_fields_stored_as_python():
    draft = DraftConfig(
        max_nodes=np.int64(8),
        recycle_width=np.int64(4),
        history_tokens=np.int32(0),
        prompt_seed_tokens=np.uint16(512),
        probability_floor=np.float32(0.25),
        refit_cost_slope=np.True_,
        cost_points=np.array([1, 2, 4]),
    )
    generation = GenerationConfig(
        max_new_tokens=np.int64(8), top_k=np.int32(5), temperature=np.float64(0.5),
        seed=np.uint64(2**64 - 1),
    )

    for value in (draft.max_nodes, draft.recycle_width, draft.history_tokens, *draft.cost_points):
        assert type(value) is int
    assert draft.prompt_seed_tokens == 512
    assert type(draft.probability_floor) is float
    assert draft.refit_cost_slope is True
    for value in (generation.max_new_tokens, generation.top_k, generation.seed):
        assert type(value) is int
    assert generation.seed == 2**64 - 1
    assert type(generation.temperature) is float


def test_stop_none_means_no_stop_strings():
    assert GenerationConfig(stop=None).stop == ()
    with pytest.raises(ValueError, match="stop must be a string or a list of strings, got 5"):
        GenerationConfig(stop=5)


def test_numpy_stop_strings_stored_as_str():
    stop = GenerationConfig(stop=np.array(["a", "b"])).stop

    assert stop == ("a", "b")
    assert all(type(text) is str for text in stop)
