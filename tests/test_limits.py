"""Invalid input, long and repetitive documents, Unicode, interrupts and fallbacks.

Each test backs an entry of docs/limits.md. Model tests run SmolLM2-135M-Instruct in float32 on
the CPU. Command-line tests run ``reader-rag`` in this process, except one that runs the
installed script, and they never load a model for input that fails before generation.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AttentionInterface

from reader_rag import cli
from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.sources import RequestIndexSource
from reader_rag.generation.generator import ReaderGenerator
from reader_rag.index.request_index import RequestIndex

GENERATOR_LOGGER = "reader_rag.generation.generator"
HAMLET = "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601."
HAMLET_MESSAGES = [{"role": "user", "content": f"{HAMLET}\nWho wrote Hamlet?"}]


def fresh_generator(generator: ReaderGenerator) -> ReaderGenerator:
    """Return a new generator over the same weights, with no state from earlier requests."""
    return ReaderGenerator(
        generator.model, generator.tokenizer, name=generator.name, cost_model=generator.cost_model
    )


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``reader-rag`` in this process; return the exit status, stdout and stderr."""
    status = cli.main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(err: str, *fragments: str) -> None:
    """Check that stderr is one ``reader-rag: error:`` line containing every fragment."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("reader-rag: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from {lines[0]!r}"


@pytest.fixture
def cli_generator(monkeypatch, smollm2_generator):
    """Make the command line use the session's SmolLM2 generator instead of loading one."""
    monkeypatch.setattr(cli, "_load_generator", lambda args: smollm2_generator)
    return smollm2_generator


# Generation inputs through the Python API


def test_empty_prompt_raises(smollm2_generator):
    with pytest.raises(ValueError, match="the prompt is empty"):
        smollm2_generator.generate("", max_new_tokens=4)


def test_prompt_at_position_limit_raises(smollm2_generator):
    limit = smollm2_generator.max_positions

    with pytest.raises(ValueError, match=f"the prompt has {limit} tokens.*at most {limit}"):
        smollm2_generator.generate_ids([42] * limit, config=GenerationConfig(max_new_tokens=1))


@pytest.mark.parametrize(
    ("prompt_ids", "fragment"),
    [
        ([1.7, 2.2], "prompt_ids must contain integer token ids, got float 1.7 at position 0"),
        ([42, 43.0], "got float 43.0 at position 1"),
        (torch.tensor([42.0, 43.0]), "prompt_ids must have an integer dtype, got torch.float32"),
        (np.array([42.5]), "prompt_ids must have an integer dtype, got float64"),
        (torch.tensor([[42, 43]]), "prompt_ids must be one-dimensional, got shape (1, 2)"),
    ],
)
def test_non_integer_prompt_ids_raise(smollm2_generator, prompt_ids, fragment):
    config = GenerationConfig(max_new_tokens=1)
    for speculative in (True, False):
        with pytest.raises(ValueError) as error:
            smollm2_generator.generate_ids(prompt_ids, config=config, speculative=speculative)

        assert fragment in str(error.value)
    with pytest.raises(ValueError) as error:
        smollm2_generator.generate_batch_ids([prompt_ids], configs=config)

    assert fragment in str(error.value)


def test_non_integer_document_ids_raise(smollm2_generator):
    config = GenerationConfig(max_new_tokens=1)

    with pytest.raises(ValueError, match="document token ids must have an integer dtype"):
        smollm2_generator.generate_ids([42, 43], [torch.tensor([42.0, 43.0])], config)


def test_document_ids_outside_vocabulary_raise(smollm2_generator):
    config = GenerationConfig(max_new_tokens=4)
    vocab = smollm2_generator.recycling.vocab_size
    documents = [[42, 43], [44, vocab + 5, 45]]
    fragment = f"document 1 has token id {vocab + 5}, outside the vocabulary"

    with pytest.raises(ValueError, match=fragment):
        smollm2_generator.generate_ids([42, 43], documents, config)
    with pytest.raises(ValueError, match=fragment):
        smollm2_generator.generate_batch_ids([[42, 43]], [documents], config)
    with pytest.raises(ValueError, match="document 0 has token id -3"):
        smollm2_generator.generate_ids([42, 43], [[-3]], config)


def test_flat_document_ids_raise(smollm2_generator):
    config = GenerationConfig(max_new_tokens=1)

    with pytest.raises(ValueError, match=r"got the int 42 at position 0; wrap .* \[ids\]"):
        smollm2_generator.generate_ids([42, 43], [42, 43], config)


def test_non_text_documents_raise(smollm2_generator):
    with pytest.raises(TypeError, match="documents must be strings, got NoneType None at position 1"):
        smollm2_generator.generate("Hello", ["a passage", None], max_new_tokens=1)


def test_numpy_seed_samples_reproducibly(smollm2_generator):
    options = {"max_new_tokens": 6, "temperature": np.float64(0.8), "seed": np.int64(3)}

    first = smollm2_generator.generate("The weather today is", **options).token_ids
    second = smollm2_generator.generate("The weather today is", **options).token_ids
    assert first == second


def test_non_integer_oracle_ids_raise(smollm2_generator):
    config = GenerationConfig(max_new_tokens=1)

    with pytest.raises(ValueError, match="oracle_ids must contain integer token ids, got float"):
        smollm2_generator.generate_ids([42, 43], config=config, oracle_ids=[44.5, 45.0])


def test_integer_prompt_id_types_same_output(smollm2_generator):
    config = GenerationConfig(max_new_tokens=4)
    ids = smollm2_generator.encode_prompt("Hamlet is a tragedy written by")
    expected = smollm2_generator.generate_ids(ids, config=config).token_ids

    typed_ids = (torch.tensor(ids), np.array(ids, dtype=np.int32), [np.int64(t) for t in ids])
    for prompt_ids in typed_ids:
        assert smollm2_generator.generate_ids(prompt_ids, config=config).token_ids == expected


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -5}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
    ],
)
def test_invalid_options_raise_in_every_entry_point(smollm2_generator, options, field):
    with pytest.raises(ValueError, match=field):
        smollm2_generator.generate("Hello", **options)
    with pytest.raises(ValueError, match=field):
        smollm2_generator.stream("Hello", **options)
    with pytest.raises(ValueError, match=field):
        smollm2_generator.generate_batch(["Hello", "Hi"], **options)


def test_unknown_option_raises_type_error(smollm2_generator):
    with pytest.raises(TypeError, match="max_tokens"):
        smollm2_generator.generate("Hello", max_tokens=4)


def test_documents_as_one_string_raise(smollm2_generator):
    with pytest.raises(TypeError, match="wrap it"):
        smollm2_generator.generate("Who wrote Hamlet?", HAMLET, max_new_tokens=4)


def test_empty_documents_are_skipped(smollm2_generator):
    without = smollm2_generator.generate(HAMLET_MESSAGES, None, max_new_tokens=8)

    with_empty = smollm2_generator.generate(HAMLET_MESSAGES, ["", "  \n\t"], max_new_tokens=8)

    assert with_empty.token_ids == without.token_ids
    assert with_empty.stats.indexed_tokens == without.stats.indexed_tokens


def test_invalid_chat_messages_raise(smollm2_generator):
    with pytest.raises(ValueError, match="role"):
        smollm2_generator.generate([{"content": "Who wrote Hamlet?"}], max_new_tokens=4)


def test_chat_messages_without_template_raise(gemma_generator):
    # Gemma 3 270M is a base model, and its tokenizer has no chat template.
    assert not getattr(gemma_generator.tokenizer, "chat_template", None)

    with pytest.raises(ValueError, match="no chat template.*plain string"):
        gemma_generator.generate(HAMLET_MESSAGES, max_new_tokens=4)


def test_documents_over_index_budget_cut(smollm2_generator, rag_prompts, caplog):
    passages = list(rag_prompts[0].passages)
    generator = ReaderGenerator(
        smollm2_generator.model,
        smollm2_generator.tokenizer,
        name=smollm2_generator.name,
        draft=DraftConfig(max_indexed_tokens=150),
        cost_model=smollm2_generator.cost_model,
    )
    lengths = [len(ids) for ids in generator.encode_documents(passages)]
    assert lengths[0] < 150 < lengths[0] + lengths[1], lengths
    messages = [{"role": "user", "content": "\n".join(passages) + "\n" + rag_prompts[0].question}]

    with caplog.at_level(logging.WARNING, logger=GENERATOR_LOGGER):
        result = generator.generate(messages, passages, max_new_tokens=16)
    plain = smollm2_generator.generate(messages, passages, max_new_tokens=16, speculative=False)

    assert "a %d-token document is cut to its first %d tokens" % (lengths[1], 150 - lengths[0]) in (
        caplog.text
    )
    assert "the rest are not used for drafting" in caplog.text
    assert result.token_ids == plain.token_ids


# Drafting near the model's position limit

# SmolLM2 accepts 8,192 positions, and a prompt close to that takes minutes to prefill on 2 CPU
# cores. A second generator over the same weights gets a lower limit instead: the decoding loop
# reads the limit only from ``max_positions``, so it caps output and draft depth the same way.
LOWERED_POSITION_LIMIT = 320
ROOM_AFTER_PROMPT = 24


def record_positions(model: torch.nn.Module, positions: list[int]):
    """Record the highest position id of every forward pass of ``model``; return the hook."""

    def record(module, args, kwargs):
        input_ids = kwargs["input_ids"]
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:
            positions.append(int(position_ids.max()))
            return
        cache = kwargs.get("cache")
        past = cache.get_seq_length() if cache is not None else 0
        positions.append(past + input_ids.shape[1] - 1)

    return model.register_forward_pre_hook(record, with_kwargs=True)


def test_drafting_near_position_limit(smollm2_generator, rag_prompts, caplog):
    limited = fresh_generator(smollm2_generator)
    limited.max_positions = LOWERED_POSITION_LIMIT
    tokenizer = smollm2_generator.tokenizer
    passage = tokenizer(rag_prompts[0].passages[0], add_special_tokens=False)["input_ids"]
    # The passage twice over: the output goes on copying it, so drafts reach the last positions.
    prompt_length = LOWERED_POSITION_LIMIT - ROOM_AFTER_PROMPT
    prompt_ids = (passage * 3)[:prompt_length]
    assert len(prompt_ids) == prompt_length
    config = GenerationConfig(max_new_tokens=1000)
    positions: list[int] = []

    hook = record_positions(smollm2_generator.model, positions)
    try:
        with caplog.at_level(logging.WARNING, logger=GENERATOR_LOGGER):
            result = limited.generate_ids(prompt_ids, [passage], config)
    finally:
        hook.remove()
    plain = limited.generate_ids(prompt_ids, [passage], config, speculative=False)

    assert f"max_new_tokens=1000 exceeds the {ROOM_AFTER_PROMPT} positions left" in caplog.text
    assert result.stats.accepted_draft_tokens > 0, "no draft reached the last positions"
    assert max(positions) < LOWERED_POSITION_LIMIT
    assert result.token_ids == plain.token_ids
    assert len(result.token_ids) <= ROOM_AFTER_PROMPT
    if result.finish_reason == "length":
        assert len(result.token_ids) == ROOM_AFTER_PROMPT
        # The last output token is emitted but never fed to the model.
        assert max(positions) == LOWERED_POSITION_LIMIT - 2


# Pathological repetition

REPEATED_TOKENS = 200_000


@pytest.mark.parametrize(
    "unit", [" the", " The cat sat on the mat."], ids=["one-word", "one-sentence"]
)
def test_repetitive_document_bounded_and_exact(smollm2_generator, unit):
    tokenizer = smollm2_generator.tokenizer
    unit_length = len(tokenizer(unit, add_special_tokens=False)["input_ids"])
    text = unit * (REPEATED_TOKENS // unit_length)
    [document] = smollm2_generator.encode_documents([text])
    assert len(document) >= REPEATED_TOKENS * 0.99
    draft = smollm2_generator.draft

    index = RequestIndex(key_length=4, max_occurrences=draft.max_occurrences)
    started = time.perf_counter()
    index.add_document(document)
    index.extend(document[:64])
    build_seconds = time.perf_counter() - started
    source = RequestIndexSource(
        index, draft.min_match_length, draft.max_match_length, draft.max_occurrences
    )
    started = time.perf_counter()
    candidates = source.propose(draft.max_depth)
    propose_seconds = time.perf_counter() - started

    # Generous bounds: building takes about 0.2 s on 2 CPU cores.
    assert build_seconds < 10
    assert propose_seconds < 1.0
    assert 0 < len(candidates) <= draft.max_occurrences
    # Each n-gram key keeps at most 2 * max_occurrences positions, and a periodic text has few
    # distinct n-grams, so the table stays small however long the document is.
    table = index._table
    assert len(table) <= 4 * unit_length
    assert max(len(ends) for ends in table.values()) <= 2 * draft.max_occurrences

    prompt_ids = smollm2_generator.encode_prompt(f"Repeat this:{unit * 8}")
    config = GenerationConfig(max_new_tokens=32)
    result = smollm2_generator.generate_ids(prompt_ids, [document], config)
    plain = smollm2_generator.generate_ids(prompt_ids, [document], config, speculative=False)

    assert result.token_ids == plain.token_ids
    assert result.stats.draft_time_s < 5.0


# Unicode in documents, prompts and streams

UNICODE_TEXTS = {
    "cjk": "東京は日本の首都です。人口は約千四百万人で、世界最大の都市圏の一つです。",
    "emoji": "Launch at dawn 🚀, crew 👩‍🚀👨‍🚀, flags 🇯🇵🇧🇷, then cake 🎂🎉.",
    "rtl": "مرحبا بالعالم، هذه جملة عربية. שלום עולם, זה משפט בעברית.",
    "combining": "Cafe\u0301 de\u0301ja\u0300 vu, Tie\u0302\u0301ng Vie\u0323\u0302t, n\u0303o.",
}


@pytest.mark.parametrize("name", list(UNICODE_TEXTS))
def test_unicode_output_equals_plain(smollm2_generator, name):
    text = UNICODE_TEXTS[name]
    messages = [{"role": "user", "content": f"Repeat this text exactly:\n\n{text}"}]

    result = smollm2_generator.generate(messages, [text], max_new_tokens=24)
    plain = smollm2_generator.generate(messages, [text], max_new_tokens=24, speculative=False)
    stream = smollm2_generator.stream(messages, [text], max_new_tokens=24)
    pieces = list(stream)

    assert result.token_ids == plain.token_ids
    assert result.text == plain.text
    assert "".join(pieces) == result.text
    assert stream.result.token_ids == result.token_ids
    if "\ufffd" not in result.text:
        assert all("\ufffd" not in piece for piece in pieces), pieces


# Stop strings split across two decoding steps


def decoding_steps(generator: ReaderGenerator, prompt_ids, document_ids, config) -> list[list[int]]:
    """Return the tokens that each step of one request emits, the prefill's token first.

    The public API returns only the whole output, so this runs the generator's own loop.
    """
    request = generator._start(prompt_ids, document_ids, config, True)
    return [list(tokens) for tokens in generator._run(request)]


def stop_across_steps(tokenizer, steps: list[list[int]]) -> tuple[str, int] | None:
    """Return a 4-character stop string whose first half ends one step and whose second half
    starts the next, accepted-draft step, and the output length where it completes."""
    output: list[int] = []
    for previous, step in zip(steps, steps[1:]):
        output += previous
        if len(step) < 2:
            continue  # the next step must emit an accepted draft token, not only its own
        before = tokenizer.decode(output)
        after = tokenizer.decode(output + step[:1])
        if len(before) < 2 or len(after) - len(before) < 2 or not after.startswith(before):
            continue
        stop = after[len(before) - 2 : len(before) + 2]
        if stop.strip() and after.find(stop) == len(before) - 2:
            return stop, len(output) + 1
    return None


def test_stop_string_split_across_steps(smollm2_generator, rag_prompts):
    tokenizer = smollm2_generator.tokenizer
    config = GenerationConfig(max_new_tokens=48)
    for prompt in rag_prompts[:8]:
        messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
        prompt_ids = smollm2_generator.encode_prompt(messages)
        document_ids = smollm2_generator.encode_documents(list(prompt.passages))
        steps = decoding_steps(smollm2_generator, prompt_ids, document_ids, config)
        found = stop_across_steps(tokenizer, steps)
        if found is not None:
            break
    else:
        pytest.fail("no output of the first 8 prompts has a step boundary for a stop string")
    stop, stop_end = found
    stop_config = GenerationConfig(max_new_tokens=48, stop=(stop,))

    result = smollm2_generator.generate_ids(prompt_ids, document_ids, stop_config)
    plain = smollm2_generator.generate_ids(
        prompt_ids, document_ids, stop_config, speculative=False
    )
    stream = smollm2_generator.stream(messages, list(prompt.passages), config=stop_config)
    pieces = list(stream)

    assert result.finish_reason == "stop"
    assert result.token_ids == plain.token_ids
    assert len(result.token_ids) == stop_end
    assert result.text == plain.text
    assert stop not in result.text
    assert "".join(pieces) == result.text


# Models whose attention ignores a custom 4D mask

IGNORING_MASK_ATTENTION = "causal_only_for_tests"


def causal_only_attention(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """Attention that ignores ``attention_mask`` and applies a causal mask aligned to the last
    key, as flash attention kernels do, so a tree's branches see each other."""
    query_length, key_length = query.shape[2], key.shape[2]
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    allowed = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device)
    allowed = allowed.tril(key_length - query_length)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=allowed, scale=scaling
    )
    return output.transpose(1, 2).contiguous(), None


def test_mask_ignoring_attention_falls_back(smollm2_generator, caplog):
    documents = [HAMLET]
    expected = smollm2_generator.generate(
        HAMLET_MESSAGES, documents, max_new_tokens=16, speculative=False
    )
    AttentionInterface.register(IGNORING_MASK_ATTENTION, causal_only_attention)
    model = smollm2_generator.model
    previous = model.config._attn_implementation
    # The weights cannot be copied (deepcopy fails on their packed tensors), so the session's
    # model switches attention for this test and switches back.
    model.set_attn_implementation(IGNORING_MASK_ATTENTION)
    try:
        generator = ReaderGenerator(
            model, smollm2_generator.tokenizer, name="smollm2-causal-only",
            cost_model=smollm2_generator.cost_model,
        )
        with caplog.at_level(logging.WARNING, logger=GENERATOR_LOGGER):
            result = generator.generate(HAMLET_MESSAGES, documents, max_new_tokens=16)
    finally:
        model.set_attn_implementation(previous)

    assert not generator.supports_tree_attention
    assert "decoding without speculation" in caplog.text
    assert IGNORING_MASK_ATTENTION in caplog.text
    assert result.stats.drafted_nodes == 0
    assert result.stats.forward_passes == len(result.token_ids)
    assert result.token_ids == expected.token_ids


# Interrupts and early close


def interrupt_forward_pass(model: torch.nn.Module, at_call: int):
    """Raise KeyboardInterrupt inside the ``at_call``-th forward pass, halfway through the
    decoder layers, so the KV cache is left partly written. Return the hook handle."""
    layers = model.model.layers
    calls = 0

    def interrupt(module, args, kwargs):
        nonlocal calls
        calls += 1
        if calls == at_call:
            raise KeyboardInterrupt

    return layers[len(layers) // 2].register_forward_pre_hook(interrupt, with_kwargs=True)


@pytest.fixture(scope="module")
def reference_answer(smollm2_generator):
    """The output of a generator that has served no other request."""
    return fresh_generator(smollm2_generator).generate(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24)


def assert_generator_usable(generator: ReaderGenerator, reference) -> None:
    assert not torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled()
    result = generator.generate(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24)
    assert result.token_ids == reference.token_ids
    assert result.text == reference.text


def test_interrupt_in_stream_loop(smollm2_generator, reference_answer):
    stream = smollm2_generator.stream(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24)

    with pytest.raises(KeyboardInterrupt):
        for number, _ in enumerate(stream, start=1):
            if number == 2:
                raise KeyboardInterrupt

    assert stream.result is None
    assert_generator_usable(smollm2_generator, reference_answer)
    stream.close()
    assert_generator_usable(smollm2_generator, reference_answer)


@pytest.mark.parametrize("entry_point", ["generate", "stream"])
def test_interrupt_in_forward_pass(smollm2_generator, reference_answer, entry_point):
    hook = interrupt_forward_pass(smollm2_generator.model, at_call=3)
    try:
        with pytest.raises(KeyboardInterrupt):
            if entry_point == "generate":
                smollm2_generator.generate(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24)
            else:
                list(smollm2_generator.stream(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24))
    finally:
        hook.remove()

    assert_generator_usable(smollm2_generator, reference_answer)


def test_stream_closed_early(smollm2_generator, reference_answer):
    stream = smollm2_generator.stream(HAMLET_MESSAGES, [HAMLET], max_new_tokens=24)
    first = next(stream)

    stream.close()

    assert reference_answer.text.startswith(first)
    assert stream.result is None
    with pytest.raises(StopIteration):
        next(stream)
    assert_generator_usable(smollm2_generator, reference_answer)


def test_cli_interrupt_exits_130(capsys, tmp_path, cli_generator):
    document = tmp_path / "hamlet.txt"
    document.write_text(HAMLET, encoding="utf-8")
    hook = interrupt_forward_pass(cli_generator.model, at_call=2)
    try:
        status, out, err = run_cli(
            capsys, "ask", "--max-new-tokens", "8", "--documents", document, "Who wrote Hamlet?"
        )
    finally:
        hook.remove()

    assert status == 130
    assert err.strip() == "interrupted"
    assert out == ""


# Command line: documents


def write_document_case(case: str, folder: Path) -> Path:
    """Create the input of one bad-document case below ``folder`` and return its path."""
    if case == "missing":
        return folder / "missing.txt"
    if case == "empty-folder":
        path = folder / "empty-folder"
        path.mkdir()
        return path
    if case == "binary-folder":
        path = folder / "binary-folder"
        path.mkdir()
        (path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
        return path
    contents = {
        "empty": b"",
        "whitespace": b" \n\t\r\n  ",
        "binary": b"PK\x03\x04\x00\x00\x08\x00",
        "not-utf8": "caf\xe9 cr\xe8me".encode("latin-1"),
        "empty-jsonl": b'{"text": ""}\n{"text": "   "}\n',
    }
    suffix = ".jsonl" if case.endswith("jsonl") else ".txt"
    path = folder / f"{case}{suffix}"
    path.write_bytes(contents[case])
    return path


DOCUMENT_CASES = {
    "missing": "does not exist",
    "empty": "contains no text",
    "whitespace": "contains no text",
    "empty-jsonl": "contains no text",
    "binary": "looks binary",
    "not-utf8": "is not valid UTF-8",
    "empty-folder": "contains no files",
    "binary-folder": "contains only binary files",
}


@pytest.mark.parametrize("case", list(DOCUMENT_CASES))
def test_cli_ask_bad_documents(capsys, tmp_path, case):
    path = write_document_case(case, tmp_path)

    status, out, err = run_cli(capsys, "ask", "--documents", path, "Who wrote Hamlet?")

    assert status == 2
    assert out == ""
    assert_one_error_line(err, str(path), DOCUMENT_CASES[case])


@pytest.mark.parametrize("case", list(DOCUMENT_CASES))
def test_cli_index_build_bad_input(capsys, tmp_path, case):
    path = write_document_case(case, tmp_path)
    store = tmp_path / "store"

    status, out, err = run_cli(
        capsys, "index", "build", "--no-datastore", "--input", path, "--out", store
    )

    assert status == 2
    assert out == ""
    assert_one_error_line(err, str(path), DOCUMENT_CASES[case])
    assert not store.exists()


def test_cli_script_prints_no_traceback(tmp_path):
    path = write_document_case("not-utf8", tmp_path)
    script = Path(sys.executable).with_name("reader-rag")

    completed = subprocess.run(
        [str(script), "ask", "--documents", str(path), "Who wrote Hamlet?"],
        capture_output=True, text=True, timeout=120, check=False,
    )

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert_one_error_line(completed.stderr, str(path), "is not valid UTF-8")


def test_cli_ask_drops_documents_that_do_not_fit(
    capsys, tmp_path, cli_generator, rag_prompts, caplog
):
    short = tmp_path / "1-short.txt"
    short.write_text(HAMLET, encoding="utf-8")
    # About 9,000 tokens of passages: more than SmolLM2's 8,192 positions on its own.
    long = tmp_path / "2-long.txt"
    long.write_text("\n".join(p for prompt in rag_prompts[:16] for p in prompt.passages))
    assert len(cli_generator.encode_documents([long.read_text()])[0]) > cli_generator.max_positions

    with caplog.at_level(logging.WARNING, logger="reader_rag.generation.prompts"):
        status, out, err = run_cli(
            capsys, "ask", "--max-new-tokens", "4", "--documents", short, long,
            "Who wrote Hamlet?",
        )

    assert status == 0, err
    assert out.strip()
    assert "only 1 of 2 documents fit" in caplog.text


def test_cli_ask_question_too_long(capsys, tmp_path, cli_generator):
    document = tmp_path / "hamlet.txt"
    document.write_text(HAMLET, encoding="utf-8")
    question = "why " * 9000

    status, out, err = run_cli(capsys, "ask", "--documents", document, question)

    assert status == 2
    assert_one_error_line(err, "the question alone needs more than", "shorten it")


# Command line: generation options


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--max-new-tokens", "0", "max_new_tokens"),
        ("--max-new-tokens", "-3", "max_new_tokens"),
        ("--temperature", "-1", "temperature"),
        ("--temperature", "nan", "temperature"),
        ("--top-p", "0", "top_p"),
        ("--top-p", "1.5", "top_p"),
        ("--top-k", "-1", "top_k"),
    ],
)
def test_cli_invalid_generation_option(capsys, tmp_path, flag, value, field):
    document = tmp_path / "hamlet.txt"
    document.write_text(HAMLET, encoding="utf-8")

    status, out, err = run_cli(
        capsys, "ask", f"{flag}={value}", "--documents", document, "Who wrote Hamlet?"
    )

    assert status == 2
    assert_one_error_line(err, field, value if value != "0" else "got 0")


@pytest.mark.parametrize(
    ("command", "default"), [("replay", 128), ("bench", 128), ("demo", 128), ("ask", 256)]
)
def test_cli_help_shows_max_new_tokens_default(capsys, command, default):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])

    assert exit_info.value.code == 0
    # The usage line names the option too, so take the options-list entry, which comes last.
    text = " ".join(capsys.readouterr().out.split())
    entry = text.split("--max-new-tokens MAX_NEW_TOKENS ")[-1].split(" --")[0]
    assert f"(default {default})" in entry


@pytest.fixture(scope="module")
def bf16_smollm2():
    return ReaderGenerator.from_pretrained("smollm2", dtype="bf16")


def test_bfloat16_tree_attention_check(bf16_smollm2):
    # bfloat16 rounding moves logits by more than the float32 tolerance, but a correct mask
    # keeps each tree row far closer to its own branch than an ignored mask would.
    assert bf16_smollm2.supports_tree_attention


def test_bfloat16_mask_ignoring_attention_falls_back(bf16_smollm2, caplog):
    AttentionInterface.register(IGNORING_MASK_ATTENTION, causal_only_attention)
    model = bf16_smollm2.model
    previous = model.config._attn_implementation
    model.set_attn_implementation(IGNORING_MASK_ATTENTION)
    try:
        generator = ReaderGenerator(model, bf16_smollm2.tokenizer, name="smollm2-bf16-causal-only")
        with caplog.at_level(logging.WARNING, logger=GENERATOR_LOGGER):
            supported = generator.supports_tree_attention
    finally:
        model.set_attn_implementation(previous)
    assert not supported
    assert "decoding without speculation" in caplog.text


def test_cli_ask_without_question_names_it(capsys, tmp_path):
    # The last --documents value is read as the question only when it is not a file, so a
    # forgotten question fails instead of answering the file's path.
    document = tmp_path / "bridge.txt"
    document.write_text("The bridge opened in 1932.", encoding="utf-8")
    assert cli.main(["ask", "--documents", str(document), "--max-new-tokens", "4"]) == 2
    assert "missing question" in capsys.readouterr().err
