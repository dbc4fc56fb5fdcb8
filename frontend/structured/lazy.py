"""llama-server's lazy grammar fields: ``grammar_lazy``, ``grammar_triggers``, ``preserved_tokens``.

With ``grammar_lazy`` the request's grammar (``grammar``, ``json_schema`` or ``response_format``)
constrains nothing until a trigger appears in the output (executor.sampling.lazy_grammar). Triggers take
llama-server's form ``{"type", "value"[, "token"]}`` with its type numbers (0 token, 1 word,
2 pattern, 3 pattern_full) or their names: a word is found anywhere in the output (a word that
is a single token must be listed in ``preserved_tokens``, as llama-server requires, and then
triggers as that token), a pattern is a regex searched in the output, pattern_full one the whole
output must match, and a token trigger names the token id in ``token``. ``preserved_tokens``
that are single tokens are written out as their text in the output (llama-server's rule), so a
special token that triggers a grammar shows.
"""

from __future__ import annotations

from typing import Any

import regex

from frontend.api.schemas import SamplingFields
from frontend.http.errors import ApiError, invalid
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import GrammarTriggers

TOKEN, WORD, PATTERN, PATTERN_FULL = range(4)
_TYPES = {"token": TOKEN, "word": WORD, "pattern": PATTERN, "pattern_full": PATTERN_FULL}
_PARAM = "grammar_triggers"


def preserved_ids(tokenizer: Tokenizer, words: list[str] | None) -> frozenset[int]:
    """The ids of the preserved strings that are one token each (others are ignored, as in llama-server)."""
    ids = (tokenizer.tokenize(word, add_special=False, parse_special=True) for word in words or ())
    return frozenset(t[0] for t in ids if len(t) == 1)


def grammar_triggers(body: SamplingFields, tokenizer: Tokenizer) -> GrammarTriggers | None:
    """The triggers of the request's lazy grammar; None when the grammar (if any) is not lazy."""
    patterns: list[str] = []
    tokens: list[int] = []
    preserved = preserved_ids(tokenizer, body.preserved_tokens)
    for i, trigger in enumerate(body.grammar_triggers or ()):
        kind = _TYPES.get(trigger.type, -1) if isinstance(trigger.type, str) else trigger.type
        value = trigger.value
        if kind == WORD:
            ids = tokenizer.tokenize(value, add_special=False, parse_special=True)
            if len(ids) == 1 and ids[0] not in preserved:
                raise _bad(i, f"the word {value!r} is one token: list it in preserved_tokens too")
            if len(ids) == 1:
                tokens.append(ids[0])
            else:
                patterns.append(regex.escape(value))
        elif kind in (PATTERN, PATTERN_FULL):
            pattern = value if kind == PATTERN else f"{'' if value.startswith('^') else '^'}{value}" \
                f"{'' if value.endswith('$') else '$'}"
            try:
                regex.compile(pattern.encode())  # as the executor compiles it (executor.sampling.lazy_grammar)
            except (regex.error, OverflowError, RecursionError) as exc:  # "a{99999999999}" overflows
                raise _bad(i, f"the pattern {value!r} is not a valid regex: {exc}") from None
            patterns.append(pattern)
        elif kind == TOKEN:
            if trigger.token is None or not 0 <= trigger.token < tokenizer.n_vocab:
                raise _bad(i, f"a token trigger needs \"token\", an id in [0, {tokenizer.n_vocab})")
            tokens.append(trigger.token)
        else:
            raise _bad(i, f"unknown type {trigger.type!r}: 0 token, 1 word, 2 pattern, 3 pattern_full "
                          "(or those names)")
    if not body.grammar_lazy:
        return None
    if not patterns and not tokens:
        raise invalid("grammar_lazy needs grammar_triggers: the grammar would never apply", param="grammar_lazy")
    return GrammarTriggers(patterns, tokens)


def triggers_json(triggers: GrammarTriggers | None) -> dict[str, Any]:
    """llama-server's ``grammar_lazy`` and ``grammar_triggers`` of a request's settings (a
    pattern_full shows as its anchored pattern, which means the same)."""
    if triggers is None:
        return {"grammar_lazy": False, "grammar_triggers": []}
    return {"grammar_lazy": True, "grammar_triggers": [{"type": PATTERN, "value": p} for p in triggers.patterns]
            + [{"type": TOKEN, "value": "", "token": t} for t in triggers.tokens]}


def _bad(index: int, why: str) -> ApiError:
    return invalid(f"grammar_triggers[{index}]: {why}", param=_PARAM)
