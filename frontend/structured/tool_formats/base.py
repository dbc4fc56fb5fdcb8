"""What a tool-call format is: where a call section opens and closes in the output, how to read
the calls in it, and the grammar that makes the model write valid ones."""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from frontend.structured import gbnf

if TYPE_CHECKING:
    from frontend.structured.args_stream import ArgsStream


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object
    id: str = ""  # the id the model wrote (Mistral's, Kimi's); "" for a new one


class ToolFormat:
    """A family's tool-call syntax. Subclasses set the markers and implement ``parse`` and
    ``section_grammar``."""

    name = ""
    starts: tuple[str, ...] = ()  # text opening a call section
    end: str | None = None  # text closing it; None: the section runs to the end of the output
    at_output_start_only = False  # the opener counts only before any other text (Llama 3 JSON)
    keep_start = False  # the opener is part of the section's text (a JSON "{")
    lead = ""  # what the generation prompt ends with and the output continues (Functionary's ">>>")
    skipped: tuple[str, ...] = ()  # markers of plain content, dropped from it (Functionary's ">>>all\n")
    tokens: tuple[str, ...] = ()  # other control tokens the calls are written with, to read as text
    string_arguments = False  # the template takes past calls' arguments as JSON text, not objects
    reasoning_key = ""  # where the template reads a past turn's reasoning, if not reasoning_content
    described_parameters = False  # the template reads every parameter's description (Command R+'s)
    # Where a call written name first begins, up to its arguments' JSON object, so that they can
    # stream (found from the section's start or the end of the previous call's arguments): groups
    # ``name`` (a JSON string, or the name as it is) and ``id`` where the model writes one.
    call_head: re.Pattern[str] | None = None
    args_stream: type[ArgsStream] | None = None  # what streams arguments not written as JSON

    @property
    def thinking_enders(self) -> tuple[str, ...]:
        """Openers that end thinking left unclosed: a call's, the call opening there (the tool
        grammar allows nothing but calls after one), not one that counts only at the output's
        start; or the answer's, where the format frames it (Kimi K3's)."""
        return () if self.at_output_start_only else self.starts

    def parse(self, section: str) -> list[ParsedCall]:
        """The calls of one section (the text between the markers); ValueError when malformed."""
        raise NotImplementedError

    def new_call_id(self) -> str:
        """An id for a call the model wrote none for (OpenAI's form; "" here: the parser's)."""
        return ""

    def bind(self, functions: list[dict[str, Any]]) -> ToolFormat:
        """The format for a request with these functions (the formats that need their schemas
        to read calls return a new instance)."""
        return self

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        """GBNF expression of one call section, opener and closer included. ``calls`` maps each
        function name to the expression of its arguments object."""
        raise NotImplementedError

    def reader(self) -> ToolFormat | None:
        """The format that reads a reply in which no calls are expected: this one without call
        openers, where every reply of the template has framing to drop (``skipped``: Functionary's
        ``>>>all``, Kimi K3's tags); None: the reply is plain text."""
        if not self.skipped:
            return None
        framing = copy.copy(self)
        framing.starts = ()
        return framing

    def free_grammar(self, rules: gbnf.Rules, section: str) -> str:
        """GBNF of a reply that may call (tool_choice auto): text that may open a call ``section``."""
        if self.at_output_start_only:
            return f"{section} | {gbnf.text_without(rules, '{')}"
        return f"{gbnf.text_without(rules, self.starts[0])} ({section})?"

    def write_calls(self, calls: list[tuple[str, dict[str, Any]]]) -> str | None:
        """Past calls (name, arguments) as the model writes them, for a template that shows no past
        calls (None: not written)."""
        return None

    def answer_grammar(self, answer: str) -> str:
        """GBNF of a reply that answers in a response format's JSON (``answer``) instead of calling."""
        return answer


def name_first_head(args_key: str, name_key: str = "name") -> re.Pattern[str]:
    """``call_head`` of calls written ``{"<name_key>": "<fn>", "<args_key>": {...}}``."""
    return re.compile(r"\{\s*" + re.escape(json.dumps(name_key)) + r'\s*:\s*(?P<name>"(?:[^"\\]|\\.)*")\s*,\s*'
                      + re.escape(json.dumps(args_key)) + r"\s*:\s*(?=\{)")


def arguments_text(value: Any) -> str:
    """Arguments as the JSON object text OpenAI sends (a string holding JSON is decoded first)."""
    if isinstance(value, str):
        value = json_value(value) if value.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return json.dumps(value, ensure_ascii=False, allow_nan=False)  # (no Infinity: not JSON)


def call_from_object(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")) -> ParsedCall:
    """``{"name": ..., "arguments": {...}}`` (or ``parameters``) -> ParsedCall."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise ValueError("a tool call needs a name")
    for key in args_keys:
        if key in obj:
            return ParsedCall(obj["name"], arguments_text(obj[key]))
    return ParsedCall(obj["name"], "{}")


def object_run(text: str, gaps: str = " \t\n") -> list[ParsedCall]:
    """The calls of JSON call objects written one after another (``call_from_object``), with any
    of the ``gaps`` characters between them."""
    decoder = json.JSONDecoder()
    text, calls, pos = text.strip(), [], 0
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        calls.append(call_from_object(obj))
        while pos < len(text) and text[pos] in gaps:
            pos += 1
    if not calls:
        raise ValueError("no call")
    return calls


def json_list_calls(section: str, read: Callable[[Any], ParsedCall]) -> list[ParsedCall]:
    """The calls of a section holding a JSON list of call objects (or one), each read by ``read``."""
    value = json.loads(section)
    calls = [read(obj) for obj in (value if isinstance(value, list) else [value])]
    if not calls:
        raise ValueError("no call")
    return calls


def json_list_grammar(rules: gbnf.Rules, start: str, end: str, one: str, parallel: bool) -> str:
    """``start[`` one call (``one``; more, comma-separated, when ``parallel``) ``]end``."""
    ws = rules.fixed("ws", '| " " | "\\n" [ \\t]{0,16}')
    more = f'("," {ws} {one})*' if parallel else ""
    return f'{gbnf.literal(start + "[")} {ws} {one} {more} {ws} {gbnf.literal("]" + end)}'


def json_value(text: str) -> Any:
    """One JSON value filling ``text`` (surrounding whitespace allowed), its numbers finite: JSON has
    no NaN or Infinity, so arguments holding them could not go out (ValueError)."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)  # (ints past 4,300 digits: ValueError)


def skip_space(text: str, pos: int) -> int:
    """The first position from ``pos`` that is not white space."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a float")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON value")


def name_object_alternatives(rules: gbnf.Rules, calls: dict[str, str], args_key: str, hint: str,
                             name_key: str = "name") -> str:
    """``{"<name_key>": "<fn>", "<args_key>": <args>}`` for each function, as one rule."""
    ws = rules.fixed("ws", '| " " | "\\n" [ \\t]{0,16}')
    alts = [
        f'"{{" {ws} {gbnf.literal(json.dumps(name_key))} {ws} ":" {ws} {gbnf.literal(json.dumps(name))} {ws} "," {ws} '
        f'{gbnf.literal(json.dumps(args_key))} {ws} ":" {ws} {args} {ws} "}}"'
        for name, args in calls.items()
    ]
    return rules.add(hint, " | ".join(alts))
