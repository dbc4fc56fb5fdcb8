"""A JSON Schema ``pattern`` (ECMA-262 regular expression subset) as a GBNF expression.

The expression matches the *JSON-encoded* characters of a string's content: a ``"`` or ``\\``
the pattern allows is written escaped, and ``.`` or a negated class never yields a raw quote,
backslash or control character. Supported: literals and escapes, ``.``, classes with ranges and
``\\d \\w \\s`` (and their negations), groups ``(...)`` and ``(?:...)``, alternation, the
quantifiers ``? * + {n} {n,} {n,m}`` (lazy forms too). A pattern matches anywhere in the string
unless anchored with ``^`` and ``$``, as JSON Schema says. Lookaround, backreferences and other
features a grammar cannot express raise ``PatternError``. The raw form (vLLM's ``guided_regex``)
matches plain text, the whole of it.
"""

from __future__ import annotations

from frontend.structured.gbnf import char_set, literal

_MAX_CODE = 0x10FFFF
_DIGIT = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "0": "\0"}
# Characters never written raw inside a JSON string: quote, backslash, control characters.
_JSON_UNSAFE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
_QUANT_LIMIT = 1000


class PatternError(ValueError):
    pass


def pattern_to_gbnf(pattern: str, raw: bool = False) -> str:
    """The GBNF expression for JSON string content matching ``pattern``; with ``raw``, for text
    that matches it whole (vLLM's guided_regex: the characters as themselves, anchored or not)."""
    anchored_start = pattern.startswith("^")
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    anchored_end = pattern.endswith("$") and backslashes % 2 == 0  # "\\$" is an escaped "$"
    body = pattern[1 if anchored_start else 0 : len(pattern) - 1 if anchored_end else len(pattern)]
    parser = _Parser(body, raw)
    expr = parser.alternation()
    if parser.pos != len(body):
        raise PatternError(f"unexpected {body[parser.pos]!r} at offset {parser.pos} of the pattern")
    if raw:
        return f"({expr})"
    any_text = f"{_any_char()}*"
    parts = ([] if anchored_start else [any_text]) + [f"({expr})"] + ([] if anchored_end else [any_text])
    return " ".join(parts)


def _any_char() -> str:
    return f"({char_set(_JSON_UNSAFE, negated=True)} | {_ESCAPED_QUOTE} | {_ESCAPED_BACKSLASH})"


_ESCAPED_QUOTE = '"\\\\\\""'  # GBNF for the two characters \"
_ESCAPED_BACKSLASH = '"\\\\\\\\"'  # GBNF for the two characters \\


def _char_expr(code: int) -> str:
    """One pattern character as the JSON text that encodes it."""
    if code == 0x22:
        return _ESCAPED_QUOTE
    if code == 0x5C:
        return _ESCAPED_BACKSLASH
    if code < 0x20 or code == 0x7F:
        json_escapes = {0x0A: "n", 0x0D: "r", 0x09: "t", 0x08: "b", 0x0C: "f"}
        esc = json_escapes.get(code)
        text = f"\\\\{esc}" if esc else f"\\\\u{code:04x}"
        return f'"{text}"'
    return literal(chr(code))


def _class_expr(ranges: list[tuple[int, int]], negated: bool) -> str:
    """A character class as JSON text: safe characters raw, quote and backslash escaped."""
    ranges = _normalize(ranges)
    if negated:
        ranges = _complement(ranges)
    safe = _subtract(ranges, _JSON_UNSAFE)
    alts = [char_set(safe)] if safe else []
    if _contains(ranges, 0x22):
        alts.append(_ESCAPED_QUOTE)
    if _contains(ranges, 0x5C):
        alts.append(_ESCAPED_BACKSLASH)
    for code in (0x09, 0x0A, 0x0D):
        if _contains(ranges, code):
            alts.append(_char_expr(code))
    if not alts:
        raise PatternError("a character class of the pattern allows no character")
    return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"


def _normalize(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in _normalize(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_CODE:
        out.append((start, _MAX_CODE))
    return out


def _subtract(ranges: list[tuple[int, int]], remove: list[tuple[int, int]]) -> list[tuple[int, int]]:
    keep = _complement(remove)
    out = []
    for lo, hi in ranges:
        for klo, khi in keep:
            a, b = max(lo, klo), min(hi, khi)
            if a <= b:
                out.append((a, b))
    return _normalize(out)


def _contains(ranges: list[tuple[int, int]], code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


def _raw_class(ranges: list[tuple[int, int]], negated: bool) -> str:
    """A character class as raw text."""
    ranges = _complement(ranges) if negated else _normalize(ranges)
    if not ranges:
        raise PatternError("a character class of the pattern allows no character")
    return char_set(ranges)


class _Parser:
    def __init__(self, text: str, raw: bool = False) -> None:
        self.text = text
        self.pos = 0
        # the text's characters as JSON string content, or as themselves
        self._char = (lambda code: literal(chr(code))) if raw else _char_expr
        self._class = _raw_class if raw else _class_expr

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def alternation(self) -> str:
        alts = [self.sequence()]
        while self._peek() == "|":
            self.pos += 1
            alts.append(self.sequence())
        return " | ".join(a or '""' for a in alts)

    def sequence(self) -> str:
        items = []
        while self.pos < len(self.text) and self._peek() not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return " ".join(items)

    def atom(self) -> str:
        ch = self._peek()
        self.pos += 1
        if ch == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self._peek() == "?":
                raise PatternError(f"the pattern uses '(?{self.text[self.pos + 1:self.pos + 2]}' "
                                   "(lookaround or named groups), which a grammar cannot express")
            inner = self.alternation()
            if self._peek() != ")":
                raise PatternError("the pattern has an unclosed '('")
            self.pos += 1
            return f"({inner})"
        if ch == "[":
            return self.char_class()
        if ch == ".":
            return self._class([(0x0A, 0x0A), (0x0D, 0x0D)], True)
        if ch == "\\":
            ranges, negated = self.escape(in_class=False)
            if len(ranges) == 1 and ranges[0][0] == ranges[0][1] and not negated:
                return self._char(ranges[0][0])
            return self._class(ranges, negated)
        if ch in "*+?{":
            raise PatternError(f"nothing to repeat before {ch!r} at offset {self.pos - 1} of the pattern")
        if ch in "^$":
            raise PatternError("'^' and '$' are supported only at the pattern's start and end")
        return self._char(ord(ch))

    def quantified(self, atom: str) -> str:
        ch = self._peek()
        if ch in ("*", "+", "?"):
            self.pos += 1
            out = f"{atom}{ch}"
        elif ch == "{" and self._looks_like_count():
            close = self.text.index("}", self.pos)
            spec = self.text[self.pos + 1 : close]
            self.pos = close + 1
            lo_text, comma, hi_text = spec.partition(",")
            lo = int(lo_text or "0")
            hi = None if comma and not hi_text else int(hi_text) if comma else lo
            if (hi is not None and hi < lo) or lo > _QUANT_LIMIT or (hi or 0) > _QUANT_LIMIT:
                raise PatternError(f"the pattern's repetition {{{spec}}} is invalid or over {_QUANT_LIMIT}")
            out = f"{atom}{{{lo},{'' if hi is None else hi}}}"
        else:
            return atom
        if self._peek() == "?":  # lazy: same language
            self.pos += 1
        if self._peek() in ("*", "+", "?") or (self._peek() == "{" and self._looks_like_count()):
            raise PatternError("the pattern repeats a repetition (possessive or nested quantifier)")
        return out

    def _looks_like_count(self) -> bool:
        close = self.text.find("}", self.pos)
        spec = self.text[self.pos + 1 : close] if close > 0 else ""
        return bool(spec) and all(c.isdigit() or c == "," for c in spec) and spec.count(",") <= 1 and spec[0] != ","

    def escape(self, in_class: bool) -> tuple[list[tuple[int, int]], bool]:
        """After a backslash: (ranges, negated)."""
        ch = self._peek()
        if not ch:
            raise PatternError("the pattern ends with a lone backslash")
        self.pos += 1
        classes = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
        if ch.lower() in classes:
            return classes[ch.lower()], ch.isupper()
        if ch in _ESCAPES:
            return [(ord(_ESCAPES[ch]),) * 2], False
        if ch == "u":
            code = self.text[self.pos : self.pos + 4]
            if len(code) != 4 or not all(c in "0123456789abcdefABCDEF" for c in code):
                raise PatternError("the pattern has a malformed \\u escape")
            self.pos += 4
            return [(int(code, 16),) * 2], False
        if ch == "x":
            code = self.text[self.pos : self.pos + 2]
            if len(code) != 2 or not all(c in "0123456789abcdefABCDEF" for c in code):
                raise PatternError("the pattern has a malformed \\x escape")
            self.pos += 2
            return [(int(code, 16),) * 2], False
        if ch.isdigit() or ch in "bBkp" and not in_class:
            raise PatternError(f"the pattern uses '\\{ch}' (backreference, word boundary or property), "
                               "which a grammar cannot express")
        if ch == "b" and in_class:
            return [(8, 8)], False
        return [(ord(ch), ord(ch))], False

    def char_class(self) -> str:
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            ch = self._peek()
            if not ch:
                raise PatternError("the pattern has an unclosed '['")
            if ch == "]" and not first:
                self.pos += 1
                break
            first = False
            self.pos += 1
            if ch == "\\":
                sub, sub_negated = self.escape(in_class=True)
                if sub_negated:
                    sub = _complement(sub)
                if len(sub) != 1 or sub[0][0] != sub[0][1]:
                    ranges.extend(sub)
                    continue
                lo = sub[0][0]
            else:
                lo = ord(ch)
            if self._peek() == "-" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] != "]":
                self.pos += 1
                hi_ch = self._peek()
                self.pos += 1
                if hi_ch == "\\":
                    sub, _ = self.escape(in_class=True)
                    hi = sub[0][1]
                else:
                    hi = ord(hi_ch)
                if hi < lo:
                    raise PatternError("the pattern has a character range out of order")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        return self._class(ranges, negated)
