"""Stop strings: find the first one in generated text, never emitting text that may begin one.

Text arrives in pieces. A piece's tail that could be the start of a stop string is held back
until the next piece decides it: either the stop string completes (generation ends there, the
stop string and everything after it are dropped, or only what follows it with vLLM's
include_stop_str_in_output) or it cannot, and the held text is released.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str], keep: bool = False) -> None:
        """``keep``: the stop string that ends the text is part of it (vLLM's include_stop_str_in_output)."""
        self._stops = [s for s in stops if s]
        self._keep = keep
        self._held = ""
        self.matched = ""  # the stop string that ended the text (llama-server's stopping_word)

    def push(self, text: str) -> tuple[str, bool]:
        """Feed new text; returns (text safe to emit, whether a stop string matched).

        After a match the matcher is done: the caller ends the generation.
        """
        if not self._stops:
            return text, False
        buf = self._held + text
        found = [(i, stop) for stop in self._stops if (i := buf.find(stop)) >= 0]
        if found:
            cut, self.matched = min(found, key=lambda hit: hit[0])
            self._held = ""
            return buf[: cut + len(self.matched) if self._keep else cut], True
        keep = self._partial_match_len(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Generation ended without a stop string: release what was held back."""
        held, self._held = self._held, ""
        return held

    def _partial_match_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best


class IndentGuard:
    """llama-server's ``n_indent``: every line after the first must be indented by at least
    ``n_indent`` spaces or tabs; the first line that is not ends the text where its content
    would begin (its indentation kept). A line's leading whitespace is held back until the line
    shows its first other character (a newline counts: an empty line ends the text too)."""

    def __init__(self, n_indent: int) -> None:
        self._n_indent = n_indent
        self._held: str | None = None  # whitespace of the line being decided; None: not deciding

    def push(self, text: str) -> tuple[str, bool]:
        """Feed new text; returns (text to pass on, whether the text ends there)."""
        if self._n_indent <= 0:
            return text, False
        out: list[str] = []
        for ch in text:
            if self._held is None:
                out.append(ch)
                if ch == "\n":
                    self._held = ""
            elif ch in " \t":
                self._held += ch
            else:
                held, self._held = self._held, None
                out.append(held)
                if len(held) < self._n_indent:
                    return "".join(out), True
                out.append(ch)
                if ch == "\n":
                    self._held = ""
        return "".join(out), False

    def flush(self) -> str:
        held, self._held = self._held or "", None
        return held
