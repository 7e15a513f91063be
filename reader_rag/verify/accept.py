"""The acceptance walk: which draft nodes the target model agrees with."""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["walk_tree"]


def walk_tree(
    children: Sequence[dict[int, int]], choose_token: Callable[[int, list[int]], int]
) -> tuple[list[int], int]:
    """Walk the draft tree along the tokens the target model chooses.

    ``children[r]`` maps a token to the child node of row ``r`` (row 0 is the root, row ``i + 1``
    is node ``i``), as :meth:`DraftTree.children` returns. ``choose_token(row, path)`` returns the
    target's token after ``row``, where ``path`` lists the nodes accepted so far: the argmax for
    greedy decoding, or a sample from the processed distribution.

    Starting at the root, the walk moves to the child that carries the chosen token and repeats;
    at the first row without such a child, the chosen token is the bonus token. Every emitted
    token is the one plain decoding would choose (greedy) or an exact sample of the target's
    conditional distribution given the accepted path (sampling), because drafts never change
    which token is chosen, only how many are checked at once.

    Returns the accepted node indices, in path order, and the bonus token.
    """
    path: list[int] = []
    row = 0
    while True:
        token = choose_token(row, path)
        child = children[row].get(token)
        if child is None:
            return path, token
        path.append(child)
        row = child + 1
