"""Tests for token recycling, the response history, grouped attention and batch tree sizing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from reader_rag.config import DraftConfig, GenerationConfig
from reader_rag.drafting.builder import RECYCLE_SOURCE, build_draft_tree, choose_batch_tree_size
from reader_rag.drafting.calibration import AcceptanceCalibrator
from reader_rag.drafting.cost_model import CostModel
from reader_rag.drafting.history import ResponseHistory
from reader_rag.drafting.recycling import RecyclingTable
from reader_rag.drafting.sources import Candidate, HistorySource, RequestIndexSource
from reader_rag.cli import main
from reader_rag.evaluation.simulator import (
    REPLAY_VARIANTS,
    Recording,
    format_replay_summary,
    load_recordings,
    replay,
    replay_report,
    save_recordings,
)
from reader_rag.index.request_index import RequestIndex
from reader_rag.models import GROUPED_SDPA
from reader_rag.drafting.tree import DraftTree
from reader_rag.verify.cache import new_cache
from reader_rag.verify.mask import tree_attention_inputs


def flat_cost(tokens: int) -> float:
    return 1.0


# -- recycling table ------------------------------------------------------------------------------


def test_table_keeps_latest_top_k():
    table = RecyclingTable(vocab_size=10, k=3)
    logits = torch.full((2, 10), -10.0)
    logits[0, [4, 5, 6]] = torch.tensor([3.0, 2.0, 1.0])
    logits[1, [7, 8, 9]] = torch.tensor([5.0, 1.0, 0.0])
    table.update([1, 2], logits)

    first = table.next_tokens(1, 3)
    assert [t for t, _ in first] == [4, 5, 6]
    assert sum(p for _, p in first) == pytest.approx(1.0, abs=1e-6)
    assert first[0][1] > first[1][1] > first[2][1]
    assert [t for t, _ in table.next_tokens(2, 2)] == [7, 8]

    newer = torch.full((1, 10), -10.0)
    newer[0, 0] = 1.0
    table.update([1], newer)
    assert table.next_tokens(1, 1)[0][0] == 0  # the latest row replaces the old one


def test_table_ignores_unknown_tokens():
    table = RecyclingTable(vocab_size=5, k=2)
    assert table.next_tokens(3, 2) == []
    assert table.next_tokens(-1, 2) == []
    assert table.next_tokens(99, 2) == []
    table.update([99, -1], torch.randn(2, 5))  # keys outside the vocabulary are skipped
    assert (table.token_ids == -1).all()
    with pytest.raises(ValueError, match="vocab_size and k"):
        RecyclingTable(vocab_size=0)


# -- tree builder with recycling ------------------------------------------------------------------


def recycling_table(rows: dict[int, list[tuple[int, float]]], vocab_size: int = 50) -> RecyclingTable:
    table = RecyclingTable(vocab_size, k=4)
    for key, entries in rows.items():
        ids = np.full((1, 4), -1, dtype=np.int32)
        probabilities = np.zeros((1, 4), dtype=np.float32)
        for rank, (token, probability) in enumerate(entries):
            ids[0, rank], probabilities[0, rank] = token, probability
        table.update_rows(np.array([key]), ids, probabilities)
    return table


def test_recycling_extends_suffix_path():
    # The request index proposes 11, 12; the model has written 13 after 12 before.
    table = recycling_table({12: [(13, 0.9)], 13: [(14, 0.9)]})
    candidates = [[Candidate((11, 12), 1.0, 6, "request")]]
    tree, buckets = build_draft_tree(
        candidates, AcceptanceCalibrator(), 8, 8, 0.0, recycling=table, root_token=10
    )
    tree.validate()
    assert len(buckets) == len(tree)
    chain = {tree.token_ids[n] for n in tree.path(len(tree) - 1)}
    assert chain == {11, 12, 13, 14}
    assert tree.sources[tree.token_ids.index(13)] == RECYCLE_SOURCE


def test_recycled_root_children_merge():
    table = recycling_table({10: [(11, 0.8), (20, 0.2)]})
    candidates = [[Candidate((11, 12), 1.0, 6, "request")]]
    tree, _ = build_draft_tree(
        candidates, AcceptanceCalibrator(), 16, 8, 0.0, recycling=table, root_token=10
    )
    tree.validate()
    root_tokens = [t for t, p in zip(tree.token_ids, tree.parents) if p < 0]
    assert sorted(root_tokens) == [11, 20]  # 11 appears once although both sources offer it


@pytest.mark.parametrize("max_nodes", [1, 3, 7])
def test_recycling_respects_budget_and_depth(max_nodes):
    chain = {t: [(t + 1, 0.9), (t + 30, 0.1)] for t in range(0, 20)}
    table = recycling_table(chain)
    tree, buckets = build_draft_tree(
        [[]], AcceptanceCalibrator(), max_nodes, 4, 0.0, recycling=table, root_token=0
    )
    tree.validate()
    assert len(tree) == len(buckets) == max_nodes
    assert max(tree.depths()) <= 4


def test_recycling_off_without_root_token():
    table = recycling_table({10: [(11, 0.9)]})
    tree, _ = build_draft_tree([[]], AcceptanceCalibrator(), 8, 8, 0.0, recycling=table)
    assert len(tree) == 0


# -- response history -----------------------------------------------------------------------------


def test_history_drafts_and_evicts():
    history = ResponseHistory(vocab_size=100, max_tokens=12)
    history.record([1, 2, 3, 4, 5, 6])
    history.record([7])  # too short to draft from: ignored
    assert len(history) == 6

    index = RequestIndex()
    index.extend([9, 9, 2, 3])
    request_source = RequestIndexSource(index)
    request_source.propose(4)
    source = HistorySource(history, request_source)
    proposals = source.propose(3)
    assert proposals and all(c.source == "history" for c in proposals)
    assert proposals[0].tokens == (4, 5, 6)

    history.record([20, 21, 22, 23, 24, 25, 26, 27])  # 14 tokens: the first output goes
    assert len(history) == 8
    assert source.propose(3) == []
    history.clear()
    assert history.datastore is None
    assert source.propose(3) == []


def test_history_rejects_invalid_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        ResponseHistory(vocab_size=10, max_tokens=0)


def test_draft_config_rejects_negatives():
    with pytest.raises(ValueError, match="recycle_width"):
        DraftConfig(recycle_width=-1)
    with pytest.raises(ValueError, match="history_tokens"):
        DraftConfig(history_tokens=-1)


# -- batch tree sizing ----------------------------------------------------------------------------


def test_batch_tree_size_follows_width_cost():
    scores = [[0.9, 0.8, 0.7], [0.9, 0.8, 0.7]]
    # Free extra width: take every node.
    assert choose_batch_tree_size(scores, flat_cost) == 3
    # Width 2 costs 1.5x: 3.8 expected tokens over 1.5 beats 2 over 1 and 5.4 over 5.
    assert choose_batch_tree_size(scores, lambda w: {1: 1.0, 2: 1.5}.get(w, 5.0)) == 1
    # Width costs as much as the tokens it adds: plain batched decoding.
    assert choose_batch_tree_size(scores, lambda w: float(w) * 2) == 0
    assert choose_batch_tree_size([], flat_cost) == 0


# -- simulator ------------------------------------------------------------------------------------


def test_replay_never_reads_ahead():
    # Output tokens never repeat and the documents are empty, so no drafter can know the next
    # token in advance. The recorded top-1 is always the true next token: a replay that read a
    # row before the step that computes it would accept drafts.
    output = list(range(100, 160))
    recording = Recording(
        prompt_ids=[1, 2, 3],
        document_ids=[],
        output_ids=output,
        top_ids=[[t, 0] for t in output],
        top_probabilities=[[0.99, 0.01]] * len(output),
    )
    result = replay([recording], DraftConfig(max_nodes=8), flat_cost, recycling=True, vocab_size=200)
    assert result.tokens == len(output)
    assert result.tokens_per_step == 1.0
    assert result.accepted_by_source == {}


def test_replay_recycles_earlier_requests():
    # Two requests write the same 40 distinct tokens. The second request's own index has never
    # seen them, but the table kept what the model wrote after each token in the first.
    output = list(range(100, 140))
    recordings = [
        Recording(
            prompt_ids=[1, 2, 3],
            document_ids=[],
            output_ids=output,
            top_ids=[[t, 0] for t in output],
            top_probabilities=[[0.99, 0.01]] * len(output),
        )
        for _ in range(2)
    ]
    config = DraftConfig(max_nodes=8)
    plain = replay(recordings, config, flat_cost, recycling=False, vocab_size=200)
    recycled = replay(recordings, config, flat_cost, recycling=True, vocab_size=200)
    assert plain.tokens_per_step == 1.0
    assert recycled.accepted_by_source.get(RECYCLE_SOURCE, 0) > 20
    assert recycled.steps < plain.steps - 20


# -- generator ------------------------------------------------------------------------------------


def test_grouped_attention_matches_sdpa(smollm2_generator):
    model = smollm2_generator.model
    assert model.config._attn_implementation == GROUPED_SDPA
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, model.config.vocab_size, (1, 40), generator=generator)
    tree = DraftTree()
    for i, parent in enumerate([-1, 0, 0, 2, -1]):
        tree.add(int(prefix[0, i]), parent, 1.0, 0, "test")
    mask, positions = tree_attention_inputs(tree, 40, smollm2_generator.dtype)
    step_ids = torch.tensor([[5, *tree.token_ids]])

    def run():
        cache = new_cache()
        with torch.inference_mode():
            out = model(input_ids=prefix, cache=cache, use_cache=True)
            step = model(
                input_ids=step_ids, attention_mask=mask, position_ids=positions, cache=cache,
                use_cache=True,
            )
        return out.logits, step.logits

    grouped = run()
    model.set_attn_implementation("sdpa")
    try:
        reference = run()
    finally:
        model.set_attn_implementation(GROUPED_SDPA)
    assert torch.equal(grouped[0], reference[0])  # causal prefill without a mask
    assert torch.equal(grouped[1], reference[1])  # tree pass with a 4D mask


def test_batch_cost_model_buckets(reader_generator):
    model = reader_generator.batch_cost_model(3)
    assert model is reader_generator.batch_cost_model(4)  # 3 rounds up to 4
    assert model(1) == 1.0
    widths = [model(w) for w in (1, 2, 3, 5, 9, 17)]
    assert widths == sorted(widths)
    assert reader_generator.batch_cost_model(1) is reader_generator.cost_model


def test_only_speculative_requests_teach(smollm2_generator, rag_prompts):
    generator = smollm2_generator
    prompt = rag_prompts[0]
    messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
    config = GenerationConfig(max_new_tokens=12)
    generator.forget_drafted_text()

    plain = generator.generate(messages, list(prompt.passages), config=config, speculative=False)
    assert len(generator.history) == 0
    assert (generator.recycling.token_ids == -1).all()

    prompt_ids = generator.encode_prompt(messages)
    generator.generate_ids(prompt_ids, [], config, oracle_ids=plain.token_ids)
    assert len(generator.history) == 0
    assert (generator.recycling.token_ids == -1).all()

    speculative = generator.generate(messages, list(prompt.passages), config=config)
    assert speculative.token_ids == plain.token_ids
    assert len(generator.history) == len(plain.token_ids)
    last = speculative.token_ids[-2]
    assert generator.recycling.next_tokens(last, 1)  # the pass after it was recorded


def synthetic_recordings() -> list[Recording]:
    output = list(range(100, 140))
    return [
        Recording(
            prompt_ids=[1, 2, 3],
            document_ids=[output[:20]],
            output_ids=output,
            top_ids=[[t, 0] for t in output],
            top_probabilities=[[0.99, 0.01]] * len(output),
        )
        for _ in range(2)
    ]


def test_replay_report_compares_source_sets():
    report = replay_report(synthetic_recordings(), flat_cost, node_budgets=(4, None), vocab_size=200)
    assert report["output_tokens"] == 80
    assert len(report["rows"]) == 2 * len(REPLAY_VARIANTS)
    by_key = {(r["max_nodes"], r["sources"]): r for r in report["rows"]}
    # Budget 4: a chain of 4 draft tokens and the bonus token, so 5 tokens per step at most.
    assert report["oracle"]["4"] <= 5.0
    for row in report["rows"]:
        assert 0.0 < row["oracle_share"] <= 1.0
    suffix = by_key[(4, "suffix")]["tokens_per_step"]
    assert by_key[(4, "suffix+recycling")]["tokens_per_step"] > suffix
    assert by_key[(4, "suffix+history")]["tokens_per_step"] > suffix
    assert "| 4 | all |" in format_replay_summary(report)


def test_cli_replay_reads_recordings(tmp_path, reader_generator, capsys):
    recordings = tmp_path / "recordings.jsonl"
    save_recordings(synthetic_recordings(), recordings)
    output = tmp_path / "replay.json"
    status = main(
        ["replay", "--recordings", str(recordings), "--node-budgets", "4,auto",
         "--output", str(output)]
    )
    assert status == 0
    report = json.loads(output.read_text())
    assert report["recordings"] == 2
    assert {row["max_nodes"] for row in report["rows"]} == {4, "cost model"}
    assert "tokens/step" in capsys.readouterr().out


def test_cli_hides_weight_loading_bar(tmp_path, reader_generator):
    recordings = tmp_path / "recordings.jsonl"
    save_recordings(synthetic_recordings(), recordings)
    command = [sys.executable, "-m", "reader_rag.cli", "replay", "--recordings", str(recordings),
               "--node-budgets", "4"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "Loading weights" not in run.stderr


def test_cli_replay_rejects_bad_budget(capsys):
    assert main(["replay", "--node-budgets", "8,0"]) == 2
    assert "invalid budget '0'" in capsys.readouterr().err


# A path check that ran after recording would first record (slow) and then fail with another
# message. With the check first, these tiny runs exit before the model loads.
TINY_REPLAY = ["replay", "--limit", "1", "--max-new-tokens", "2"]


@pytest.mark.parametrize("below_file", ["rec.jsonl", "sub/rec.jsonl"])
def test_cli_replay_recordings_under_file(tmp_path, capsys, below_file):
    existing = tmp_path / "good.jsonl"
    existing.write_text("kept\n")
    recordings = existing / below_file

    assert main([*TINY_REPLAY, "--recordings", str(recordings)]) == 2

    error = capsys.readouterr().err
    assert f"--recordings {str(recordings)!r} cannot be created" in error
    assert f"{str(existing)!r} is a file, not a folder" in error
    assert existing.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.jsonl"]


@pytest.mark.parametrize(("option", "example_name"), [
    ("--recordings", "recordings.jsonl"),
    ("--output", "replay.json"),
])
def test_cli_replay_path_is_folder(tmp_path, capsys, option, example_name):
    assert main([*TINY_REPLAY, option, str(tmp_path)]) == 2

    error = capsys.readouterr().err
    assert f"{option} {str(tmp_path)!r} is a folder" in error
    assert f"such as {str(tmp_path / example_name)!r}" in error
    assert list(tmp_path.iterdir()) == []


def test_cli_replay_output_under_file(tmp_path, capsys):
    existing = tmp_path / "report.json"
    existing.write_text("{}\n")
    recordings = tmp_path / "recordings.jsonl"

    status = main(
        [*TINY_REPLAY, "--recordings", str(recordings), "--output", str(existing / "replay.json")]
    )

    assert status == 2
    assert f"{str(existing)!r} is a file, not a folder" in capsys.readouterr().err
    assert not recordings.exists()


def test_cli_replay_output_same_as_recordings(tmp_path, capsys):
    recordings = tmp_path / "recordings.jsonl"
    save_recordings(synthetic_recordings(), recordings)
    before = recordings.read_text()
    (tmp_path / "sub").mkdir()
    same_file = tmp_path / "sub" / ".." / recordings.name

    status = main(["replay", "--recordings", str(recordings), "--output", str(same_file)])

    assert status == 2
    assert "--output and --recordings name the same file" in capsys.readouterr().err
    assert recordings.read_text() == before


@pytest.mark.parametrize("command", [
    ["bench", "--limit", "1", "--max-new-tokens", "2"],
    ["bench", "--limit", "1", "--max-new-tokens", "2", "--batch-size", "2"],
    ["eval", "--limit", "1", "--max-new-tokens", "2"],
    ["bench-store", "--wiki-limit", "1"],
])
def test_cli_report_path_is_folder(tmp_path, capsys, command):
    if command[0] == "bench-store":
        command = [*command, "--store-out", str(tmp_path / "store")]

    assert main([*command, "--output", str(tmp_path)]) == 2

    assert f"--output {str(tmp_path)!r} is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_save_recordings_error_keeps_previous_file(tmp_path):
    path = tmp_path / "recordings.jsonl"
    save_recordings(synthetic_recordings(), path)
    before = path.read_text()
    unserializable = Recording(prompt_ids=[1], document_ids=[], output_ids=[object()])

    with pytest.raises(TypeError, match="not JSON serializable"):
        save_recordings([synthetic_recordings()[0], unserializable], path)

    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["recordings.jsonl"]


def test_save_recordings_through_symlink_keeps_mode(tmp_path):
    real = tmp_path / "real.jsonl"
    save_recordings(synthetic_recordings(), real)
    real.chmod(0o600)
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)

    save_recordings(synthetic_recordings()[:1], link)

    assert link.is_symlink()
    assert len(load_recordings(real)) == 1
    assert real.stat().st_mode & 0o777 == 0o600


# Saves three recordings with a json.dumps that kills the process (SIGKILL) on its second call,
# partway through the write.
KILLED_SAVE = r"""
import json, os, signal, sys
from reader_rag.evaluation import simulator
from reader_rag.evaluation.simulator import Recording, save_recordings

calls = []
def dumps_then_kill(value, **options):
    calls.append(value)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return json.dumps(value, **options)

simulator.json = type("json", (), {"dumps": staticmethod(dumps_then_kill)})
recordings = [Recording(prompt_ids=[1], document_ids=[], output_ids=[n]) for n in range(3)]
save_recordings(recordings, sys.argv[1])
"""


def test_killed_save_keeps_previous_recordings(tmp_path):
    path = tmp_path / "recordings.jsonl"
    save_recordings(synthetic_recordings(), path)
    before = path.read_text()

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True, text=True, timeout=300
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert path.read_text() == before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".recordings.jsonl.tmp-")]
    assert len(leftovers) == 1
    # The next save replaces the file and removes the copy that the killed process left.
    save_recordings(synthetic_recordings()[:1], path)
    assert len(load_recordings(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["recordings.jsonl"]


def test_drafting_state_round_trip(smollm2_generator, rag_prompts):
    generator = smollm2_generator
    prompt = rag_prompts[1]
    messages = [{"role": "user", "content": "\n".join([*prompt.passages, prompt.question])}]
    config = GenerationConfig(max_new_tokens=8)
    state = generator.drafting_state()
    table_before = generator.recycling.snapshot()
    history_before = len(generator.history)
    calibrator_before = generator.calibrator.snapshot()

    generator.generate(messages, list(prompt.passages), config=config)
    assert len(generator.history) > history_before

    generator.restore_drafting_state(state)
    assert len(generator.history) == history_before
    assert np.array_equal(generator.recycling.token_ids, table_before[0])
    assert np.array_equal(generator.recycling.probabilities, table_before[1])
    assert generator.calibrator.snapshot() == calibrator_before


def test_module_entry_point_runs():
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "reader_rag.cli", "replay", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--node-budgets" in completed.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "contains no recordings"),
        ("\n\n", "contains no recordings"),
        ("{not json\n", "line 1: not a valid recording"),
        ('{"prompt_ids": [1], "document_ids": [], "output_ids": [2], "foo": 1}\n', "unknown fields"),
        ('{"prompt_ids": [1], "document_ids": null, "output_ids": [2]}\n', "document_ids must be a list"),
        ('{"prompt_ids": [1], "document_ids": [], "output_ids": []}\n', "must not be empty"),
        ('{"prompt_ids": ["a"], "document_ids": [], "output_ids": [2]}\n', "non-negative integers"),
        (
            '{"prompt_ids": [1], "document_ids": [], "output_ids": [2, 3], '
            '"top_ids": [[2]], "top_probabilities": [[1.0]]}\n',
            "one row of equal width per output token",
        ),
        (
            '{"prompt_ids": [1], "document_ids": [], "output_ids": [2], "top_ids": [[2]]}\n',
            "come together",
        ),
        ('{"prompt_ids": [1099511627776], "document_ids": [], "output_ids": [2]}\n', "below 2"),
        (
            '{"prompt_ids": [1], "document_ids": [], "output_ids": [2], '
            '"top_ids": [[2]], "top_probabilities": [["x"]]}\n',
            "between 0 and 1",
        ),
        (
            '{"prompt_ids": [1], "document_ids": [], "output_ids": [2], '
            '"top_ids": [[2]], "top_probabilities": [[NaN]]}\n',
            "between 0 and 1",
        ),
    ],
)
def test_load_recordings_rejects_bad_files(tmp_path, content, message):
    path = tmp_path / "recordings.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        load_recordings(path)
    assert str(path) in str(raised.value)


def test_cli_replay_bad_recordings(tmp_path, capsys):
    path = tmp_path / "recordings.jsonl"
    path.write_text("")
    assert main(["replay", "--recordings", str(path)]) == 2
    error = capsys.readouterr().err
    assert "contains no recordings" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("value", [2.5, "4", True, -1])
def test_draft_config_rejects_non_integers(value):
    with pytest.raises(ValueError, match="recycle_width must be an integer"):
        DraftConfig(recycle_width=value)
    with pytest.raises(ValueError, match="history_tokens must be an integer"):
        DraftConfig(history_tokens=value)


def test_wide_recycling_table():
    table = RecyclingTable(vocab_size=20, k=12)
    assert table.token_ids.shape == (20, 12)
    assert RecyclingTable(vocab_size=5, k=8).k == 5  # a tiny vocabulary caps k


def test_restore_rejects_foreign_state(smollm2_generator):
    generator = smollm2_generator
    calibrator_before = generator.calibrator.snapshot()
    foreign = (({}, {}), (np.zeros((10, 8), np.int32), np.zeros((10, 8), np.float32)), None)
    with pytest.raises(ValueError, match="does not fit this table"):
        generator.restore_drafting_state(foreign)
    assert generator.calibrator.snapshot() == calibrator_before


def test_large_batch_cost_scales(reader_generator):
    from reader_rag.generation.generator import MAX_MEASURED_BATCH

    cost = reader_generator.batch_cost_model(4 * MAX_MEASURED_BATCH)
    assert cost(1) == pytest.approx(1.0)
    assert cost(2) >= 1.0
    assert max(reader_generator._batch_cost_models) <= MAX_MEASURED_BATCH


def test_cli_report_symlink_below_file(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    link = tmp_path / "report.json"
    link.symlink_to(blocker / "report.json")

    assert main(["bench", "--limit", "1", "--max-new-tokens", "2", "--output", str(link)]) == 2

    error = capsys.readouterr().err
    assert f"--output {str(link)!r} cannot be created because {str(blocker)!r} is a file" in error


def test_cli_replay_symlink_loop(tmp_path, capsys):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)

    assert main(["replay", "--limit", "1", "--max-new-tokens", "2", "--recordings", str(loop)]) == 2

    assert f"--recordings {str(loop)!r} cannot be resolved" in capsys.readouterr().err
