"""Small helpers to write GBNF (llama.cpp's grammar format): literals, character sets, rule sets.

A ``Rules`` collects named rules; names are made unique and valid (``[a-zA-Z0-9-]+``), so the
converters can name rules after what they hold (``person-name``) without clashes.
"""

from __future__ import annotations

import re

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


def literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = ['"']
    for ch in text:
        out.append(_escape_char(ch, '"'))
    out.append('"')
    return "".join(out)


def char_set(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """``[...]`` of code point ranges (inclusive)."""
    parts = []
    for lo, hi in ranges:
        parts.append(_escape_char(chr(lo), "]^-"))
        if hi > lo:
            parts.append("-" + _escape_char(chr(hi), "]^-"))
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def _escape_char(ch: str, specials: str) -> str:
    code = ord(ch)
    if ch == "\\" or ch in specials:
        return "\\" + ch
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    if ch == "\t":
        return "\\t"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    return ch


def repeat(item: str, min_n: int, max_n: int | None, separator: str = "") -> str:
    """``item`` repeated min_n..max_n times (None: unbounded), with an optional separator."""
    if min_n == 0 and max_n == 0:
        return '""'
    if not separator:
        if max_n is None:
            return f"({item}){{{min_n},}}"
        return f"({item}){{{min_n},{max_n}}}"
    # item (sep item){min-1, max-1}; all optional when min is 0
    tail_max = None if max_n is None else max_n - 1
    tail = repeat(f"{separator} {item}", max(0, min_n - 1), tail_max) if tail_max != 0 else ""
    body = f"{item} {tail}".strip()
    return f"({body})" if min_n >= 1 else f"({body})?"


class Rules:
    """An ordered set of named GBNF rules."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}

    def reserve(self, hint: str) -> str:
        """A fresh name (for recursive rules, whose body is known later)."""
        base = _NAME_CHARS.sub("-", hint).strip("-") or "r"
        name, k = base, 1
        while name in self._rules:
            k += 1
            name = f"{base}-{k}"
        self._rules[name] = ""
        return name

    def define(self, name: str, body: str) -> str:
        self._rules[name] = body
        return name

    def add(self, hint: str, body: str) -> str:
        """A rule for ``body``, reusing an existing rule with the same body."""
        for name, existing in self._rules.items():
            if existing == body and name != "root":
                return name
        return self.define(self.reserve(hint), body)

    def fixed(self, name: str, body: str) -> str:
        """A shared rule under a fixed name (``ws``, ``string``...), defined once."""
        if name not in self._rules:
            self._rules[name] = body
        return name

    def text(self) -> str:
        ordered = sorted(self._rules.items(), key=lambda kv: (kv[0] != "root", kv[0]))
        return "\n".join(f"{name} ::= {body}" for name, body in ordered)


def text_without(rules: Rules, markers: str | tuple[str, ...], name: str = "free-text") -> str:
    """A rule for any text in which none of ``markers`` occurs; the text may end with a proper
    prefix of one (the marker may follow: after free text a call may open).

    The rules are the states of the automaton that tracks the longest end of the text that begins
    a marker (Knuth-Morris-Pratt; Aho-Corasick for several markers): a character moves a state to
    the one it leads to, and a character that would complete a marker leads nowhere. Simpler "no
    first character, or the first and no second..." rules miss overlaps such as ``<<tool_call>``.
    """
    markers = (markers,) if isinstance(markers, str) else markers
    prefixes = sorted({m[:i] for m in markers for i in range(len(m))}, key=lambda p: (len(p), p))
    states = {p: rules.reserve(f"{name}-{k}") for k, p in enumerate(prefixes)}
    alphabet = sorted({c for m in markers for c in m})
    for prefix, state in states.items():
        alts, leaves_zero = [], []
        for c in alphabet:
            after = _after(prefix + c, markers, states)
            if after == "":
                continue
            leaves_zero.append((ord(c), ord(c)))  # (or completes a marker: then allowed nowhere)
            if after is not None:
                alts.append(f"{literal(c)} {states[after]}")
        alts.append(f"{char_set(leaves_zero, negated=True)} {states['']}")
        rules.define(state, f"({' | '.join(alts)})?")
    return states[""]


def _after(text: str, markers: tuple[str, ...], prefixes: dict[str, str]) -> str | None:
    """The longest end of ``text`` that begins a marker; None when ``text`` ends with a marker."""
    if any(text.endswith(m) for m in markers):
        return None
    return next(text[k:] for k in range(len(text) + 1) if text[k:] in prefixes)
