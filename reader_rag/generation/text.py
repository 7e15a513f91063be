"""Stop strings and incremental detokenization."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher", "TextStreamer", "cut_at_stop"]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Return ``text`` cut before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


class StopMatcher:
    """Detect the first token after which the generated text contains a stop string.

    Only the tail of the output is decoded after each token: a stop string that appears for the
    first time must end inside the newest token, so the tail needs the stop string's length in
    characters plus that token. ``tail_tokens`` bounds how many tokens that is, because every token
    decodes to at least one character except special tokens and partial UTF-8 byte tokens.
    """

    def __init__(self, tokenizer, stop: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.tail_tokens = max((len(s) for s in self.stop), default=0) + 8

    def matches(self, token_ids: Sequence[int]) -> bool:
        """Return whether the text of ``token_ids`` (the output so far) contains a stop string."""
        if not self.stop:
            return False
        tail = self.tokenizer.decode(token_ids[-self.tail_tokens :], skip_special_tokens=True)
        return any(s in tail for s in self.stop)


class TextStreamer:
    """Turn a growing list of output token ids into text deltas that never need retracting.

    Text is held back while it ends in an incomplete UTF-8 character (U+FFFD from a partial byte
    token) or in a prefix of a stop string, since the next tokens may complete either.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self._sent = 0

    def push(self, token_ids: Sequence[int], final: bool = False) -> str:
        """Return the new text since the last call, given all output token ids so far."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, self.stop)
        if not final and not stopped:
            text = text[: len(text) - self._held_back(text)]
        delta = text[self._sent :]
        self._sent = max(self._sent, len(text))
        return delta

    def _held_back(self, text: str) -> int:
        held = 0
        if text.endswith("\ufffd"):
            held = len(text) - len(text.rstrip("\ufffd"))
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    held = max(held, size)
                    break
        return held
