"""Draw one draft tree, its verification and its tree attention mask as docs/img/draft-tree.svg.

The tree, the acceptance walk and the mask come from the library's own functions (``DraftTree``,
``walk_tree`` and ``tree_attention_inputs``), so the figure shows what the decoding loop
computes. Only the target model is scripted: a table gives its token after each row.

Usage, from the repository root:

    .venv/bin/python docs/scripts/draw_tree.py [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyBboxPatch

from reader_rag.drafting.tree import DraftTree
from reader_rag.verify.accept import walk_tree
from reader_rag.verify.mask import tree_attention_inputs

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "img" / "draft-tree.svg"

# Committed tokens whose KV entries are in the cache, and the last accepted token (the root).
PREFIX = ["The", "capital", "of", "France", "is"]
ROOT = "Paris"
# Draft nodes as (token, parent node or -1 for the root, estimated path probability).
NODES = [
    (",", -1, 0.62),
    ("which", 0, 0.45),
    ("is", 1, 0.31),
    (".", -1, 0.22),
    ("the", 3, 0.12),
]
# The scripted target model: its greedy token after the text of each row.
TARGET_TOKEN = {
    "Paris": ",",
    "Paris ,": "which",
    "Paris , which": "is",
    "Paris , which is": "home",
}

ACCEPTED_COLOR = "#c8e6c9"
REJECTED_COLOR = "#eeeeee"
ROOT_COLOR = "#bbdefb"
BONUS_COLOR = "#fff9c4"
# Horizontal distance between tree depths, and box size, in data units of the tree panel.
DEPTH_SPACING = 1.3
BOX_WIDTH = 1.0
BOX_HEIGHT = 0.62


def build_tree(vocabulary: list[str]) -> DraftTree:
    tree = DraftTree()
    for token, parent, score in NODES:
        tree.add(vocabulary.index(token), parent, score, 1, "request")
    tree.validate()
    return tree


def verify(tree: DraftTree, vocabulary: list[str]) -> tuple[list[int], str]:
    """Return the accepted path and the bonus token of the acceptance walk under the script."""

    def choose_token(row: int, path: list[int]) -> int:
        text = " ".join([ROOT, *(vocabulary[tree.token_ids[node]] for node in path)])
        token = TARGET_TOKEN[text]
        if token not in vocabulary:
            vocabulary.append(token)
        return vocabulary.index(token)

    path, bonus = walk_tree(tree.children(), choose_token)
    return path, vocabulary[bonus]


def draw_box(axis, x: float, y: float, text: str, color: str, dashed: bool = False) -> None:
    axis.add_patch(
        FancyBboxPatch(
            (x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2), BOX_WIDTH, BOX_HEIGHT,
            boxstyle="round,pad=0.02", facecolor=color, edgecolor="#424242",
            linestyle="--" if dashed else "-", linewidth=1.0,
        )
    )
    axis.text(x, y, text, ha="center", va="center", fontsize=9)


def draw_tree_panel(axis, tree: DraftTree, vocabulary: list[str], path: list[int], bonus: str):
    depths = tree.depths()
    # Nodes on the first branch of the root go on the upper line, the rest below.
    first_branch = set(tree.path(0)) | {i for i in range(len(tree)) if 0 in tree.path(i)}
    place = {-1: (0.0, 0.0)}
    for node in range(len(tree)):
        place[node] = (depths[node] * DEPTH_SPACING, 0.6 if node in first_branch else -0.6)

    for node, parent in enumerate(tree.parents):
        (x0, y0), (x1, y1) = place[parent], place[node]
        axis.plot(
            [x0 + BOX_WIDTH / 2, x1 - BOX_WIDTH / 2], [y0, y1],
            color="#616161", linewidth=1.0, zorder=0,
        )

    draw_box(axis, *place[-1], f"{ROOT!r}\nrow 0\nroot", ROOT_COLOR)
    accepted = set(path)
    reached = {-1, *path}
    for node in range(len(tree)):
        # The walk checks a node only when it reached the node's parent. Other nodes are skipped.
        if node in accepted:
            status = "accepted"
        elif tree.parents[node] in reached:
            status = "rejected"
        else:
            status = "skipped"
        color = ACCEPTED_COLOR if node in accepted else REJECTED_COLOR
        label = f"{vocabulary[tree.token_ids[node]]!r}\nrow {node + 1}\n{status}"
        draw_box(axis, *place[node], label, color)

    last_x, last_y = place[path[-1]] if path else place[-1]
    bonus_x = last_x + DEPTH_SPACING
    axis.annotate(
        "", xy=(bonus_x - BOX_WIDTH / 2, last_y), xytext=(last_x + BOX_WIDTH / 2, last_y),
        arrowprops={"arrowstyle": "->", "color": "#616161", "linestyle": "--"},
    )
    draw_box(axis, bonus_x, last_y, f"{bonus!r}\nbonus\ntoken", BONUS_COLOR, dashed=True)

    emitted = [vocabulary[tree.token_ids[node]] for node in path] + [bonus]
    axis.text(
        -BOX_WIDTH / 2, -1.35,
        f"committed prefix: {' '.join(PREFIX)}\n"
        f"emitted by this forward pass: {' '.join(emitted)}  ({len(emitted)} tokens)",
        ha="left", va="center", fontsize=9.5,
    )
    axis.set_xlim(-BOX_WIDTH / 2 - 0.05, bonus_x + BOX_WIDTH / 2 + 0.05)
    axis.set_ylim(-1.6, 1.0)
    axis.set_aspect("equal")
    axis.axis("off")
    axis.set_title("Draft tree and acceptance walk", fontsize=11)


def draw_mask_panel(axis, tree: DraftTree, vocabulary: list[str]) -> None:
    mask, position_ids = tree_attention_inputs(tree, len(PREFIX), torch.float32)
    allowed = (mask[0, 0] == 0).numpy()
    rows = [ROOT, *(vocabulary[token] for token in tree.token_ids)]
    positions = position_ids[0].tolist()

    axis.imshow(allowed, cmap="Greys", vmin=0, vmax=1.6, aspect="equal")
    axis.set_xticks(range(allowed.shape[1]), [*PREFIX, *rows], rotation=60, fontsize=9)
    axis.set_yticks(
        range(len(rows)),
        [f"row {r}: {token!r}, position {positions[r]}" for r, token in enumerate(rows)],
        fontsize=9,
    )
    axis.axvline(len(PREFIX) - 0.5, color="#d32f2f", linewidth=1.2)
    axis.set_xlabel("keys: KV cache prefix | tree rows", fontsize=9)
    axis.set_title("Tree attention mask (dark: may attend)", fontsize=11)


def main(argv: list[str]) -> None:
    output = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    vocabulary = [*PREFIX, ROOT, *(token for token, _, _ in NODES)]
    tree = build_tree(vocabulary)
    path, bonus = verify(tree, vocabulary)

    # Stable element ids and no timestamp keep the SVG byte-identical across runs.
    plt.rcParams["svg.hashsalt"] = "draft-tree"
    plt.rcParams["svg.fonttype"] = "none"
    figure, (tree_axis, mask_axis) = plt.subplots(
        1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.25, 1]}, layout="constrained"
    )
    draw_tree_panel(tree_axis, tree, vocabulary, path, bonus)
    draw_mask_panel(mask_axis, tree, vocabulary)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, metadata={"Date": None})
    print(f"wrote {output}")


if __name__ == "__main__":
    main(sys.argv)
