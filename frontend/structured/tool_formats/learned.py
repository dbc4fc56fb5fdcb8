"""A tool-call format read off a chat template that no known format matches, as llama.cpp's
differential analysis reads one: the template renders an assistant turn holding a probe call
and the same turn without it, and where the probe's name and arguments land in the difference
shows the syntax. Two shapes are learned, the arguments written as JSON in both:

- each call one JSON object holding the name and the arguments under keys of the template's
  choosing (``<TOOLCALL>[{"name": ..., "arguments": {...}}]</TOOLCALL>``, ``<tool_call>{...}</tool_call>``);
- the name, then the arguments object (``<call>NAME<sep>{...}</call>``).

A turn with two probe calls shows whether calls share one section (and what separates them)
or each gets its own. Anything else (arguments written as elements, Python calls, calls with
ids, markers that are not tags but text a reply may hold anyway, such as ``A:`` or ``[``) is not
learned: such a template keeps the generic format.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from dataclasses import dataclass

from frontend.structured import gbnf
from frontend.structured.tool_formats import detect_native_format
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, skip_space
from frontend.text.chat_template import ChatTemplate, ChatTemplateError

log = logging.getLogger(__name__)

_NAMES = ("probe_fn_alpha", "probe_fn_beta")
_ARGS = ({"probe_key": "probe_value"}, {"probe_key": "probe_other"})
_IDS = ("call0probe", "call1probe")
_MAX_TAG = 48
_TAG = re.compile(r"<[/|｜]?[A-Za-z_][^<>\n]*>?|\[[A-Za-z_]+\]")
_USER = {"role": "user", "content": "probe question"}
_ANSWER = "probe answer"


@dataclass(frozen=True, slots=True)
class _Syntax:
    opener: str  # what opens a section, as the template writes it (white space included)
    closer: str  # what closes it ("" where nothing does)
    separator: str  # between two calls of one section ("" where each call has a section of its own)
    shared: bool  # the calls of a turn share one section
    name_key: str  # JSON-object calls: the keys of the name and the arguments ("" for name-first calls)
    args_key: str
    between: str  # name-first calls: the text between the name and the arguments


class LearnedFormat(ToolFormat):
    name = "learned"

    def __init__(self, syntax: _Syntax) -> None:
        self._s = syntax
        self.starts = (syntax.opener.strip(),)
        self.end = syntax.closer.strip() or None
        name = r'(?P<name>"(?:[^"\\]|\\.)*")' if syntax.name_key else r"(?P<name>[\w.-]+)"
        if syntax.name_key:
            head = (r"\{\s*" + re.escape(json.dumps(syntax.name_key)) + r"\s*:\s*" + name + r"\s*,\s*"
                    + re.escape(json.dumps(syntax.args_key)) + r"\s*:\s*")
        else:
            head = name + re.escape(syntax.between)
        self.call_head = re.compile(head + r"(?=\{)")

    def parse(self, section: str) -> list[ParsedCall]:
        s = self._s
        decoder = json.JSONDecoder()
        text = section.strip()
        separator = s.separator.strip()
        calls, pos = [], 0
        while pos < len(text):
            if calls and separator:
                if not text.startswith(separator, pos):
                    raise ValueError("calls not separated as the template separates them")
                pos = skip_space(text, pos + len(separator))
            if s.name_key:
                obj, pos = decoder.raw_decode(text, pos)
                if not isinstance(obj, dict) or not isinstance(obj.get(s.name_key), str) or not obj[s.name_key]:
                    raise ValueError("a call needs a name")
                calls.append(ParsedCall(obj[s.name_key], arguments_text(obj.get(s.args_key, {}))))
            else:
                cut = text.find(s.between, pos)
                name = text[pos:cut].strip() if cut > pos else ""
                if not name or not re.fullmatch(r"[\w.-]+", name):
                    raise ValueError("a call needs a name before its arguments")
                args, pos = decoder.raw_decode(text, skip_space(text, cut + len(s.between)))
                calls.append(ParsedCall(name, arguments_text(args)))
            pos = skip_space(text, pos)
            if not s.shared:
                break
        if not calls or pos < len(text):
            raise ValueError("not the template's calls")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        s = self._s
        if s.name_key:
            heads = {name: "{" + json.dumps(s.name_key) + ": " + json.dumps(name) + ", " + json.dumps(s.args_key) + ": "
                     for name in calls}
            alts = [f'{gbnf.literal(heads[name])} {args} "}}"' for name, args in calls.items()]
        else:
            alts = [f"{gbnf.literal(name + s.between)} {args}" for name, args in calls.items()]
        one = rules.add("tool-call-learned", " | ".join(alts))
        body = f"{one} ({gbnf.literal(s.separator)} {one})*" if parallel and s.shared else one
        return f"{gbnf.literal(s.opener)} {body} {gbnf.literal(s.closer)}" if s.closer else \
            f"{gbnf.literal(s.opener)} {body}"


def template_format(source: str) -> ToolFormat | None:
    """The tool-call format of a template: its family's, else one learned from it (None: neither)."""
    return detect_native_format(source) or learn_format(source)


@functools.lru_cache(maxsize=16)
def learn_format(source: str) -> LearnedFormat | None:
    """The format ``source`` writes calls in, when it is one of the shapes above."""
    try:
        template = ChatTemplate(source, "", "")
        one, two = (_calls_text(template, n) for n in (1, 2))
        syntax = _json_object_syntax(one, two) or _name_first_syntax(one, two) if one and two else None
    except (ChatTemplateError, ValueError):
        return None
    except Exception:  # (a template is a program: whatever it does, the request goes on without)
        log.warning("learning the chat template's tool-call syntax failed", exc_info=True)
        return None
    # Markers that are tags, not text a reply may hold anyway ("A:", "(", "]" alone).
    if syntax is None or not _TAG.search(syntax.opener) or syntax.closer.strip() and not _TAG.search(syntax.closer):
        return None
    log.info("tool calls in the chat template's syntax, learned from it: %r ... %r", syntax.opener.strip(),
             syntax.closer.strip())
    return LearnedFormat(syntax)


def _calls_text(template: ChatTemplate, n: int) -> str | None:
    """What the model writes for a turn of ``n`` probe calls (after the generation prompt), less
    what it writes for the same turn without calls."""
    tools = [{"type": "function", "function": {"name": name, "description": "", "parameters": {
        "type": "object", "properties": {"probe_key": {"type": "string"}}}}} for name in _NAMES]
    calls = [{"id": _IDS[i], "type": "function", "function": {"name": _NAMES[i], "arguments": _ARGS[i]}}
             for i in range(n)]
    prompt = template.render([_USER], True, tools)
    with_calls = template.render([_USER, {"role": "assistant", "content": "", "tool_calls": calls}], False, tools)
    without = template.render([_USER, {"role": "assistant", "content": ""}], False, tools)
    # The output begins where the turn leaves the generation prompt (a template may leave out a
    # turn without content altogether, or the prompt may open a thinking the turn does not have).
    output = _tag_start(with_calls, len(os.path.commonprefix([with_calls, prompt])))
    start = max(len(os.path.commonprefix([with_calls, without])), output)
    end = len(with_calls) - len(os.path.commonprefix([with_calls[start:][::-1], without[start:][::-1]]))
    # The text that differs may be shifted by characters the two share (the "<" of "<tool_call>"
    # and of the turn's end), or begin or end inside a tag they share part of: shift it, then
    # widen it to whole tags.
    while 0 < start < end and with_calls[start - 1] == with_calls[end - 1] and _tag_start(with_calls, start) < start:
        start, end = start - 1, end - 1
    start, end = _tag_start(with_calls, start), _tag_end(with_calls, end)
    text = with_calls[start:end]
    # A turn's end (an end-of-generation token, mostly) is not the calls', should the turn without
    # calls not have shown it.
    answered = template.render([_USER, {"role": "assistant", "content": _ANSWER}], False, tools)
    turn_end = answered[answered.rfind(_ANSWER) + len(_ANSWER):].strip()
    if turn_end and text.rstrip().endswith(turn_end):
        text = text.rstrip()[: -len(turn_end)]
    if not all(name in text for name in _NAMES[:n]) or any(call_id in text for call_id in _IDS):
        return None  # (calls that carry ids are not learned)
    return text


def _json_object_syntax(one: str, two: str) -> _Syntax | None:
    found = _enclosing_object(one, _NAMES[0])
    if found is None:
        return None
    start, end, name_key, args_key = found
    second = _enclosing_object(two, _NAMES[1])
    first = _enclosing_object(two, _NAMES[0])
    if second is None or first is None:
        return None
    gap = two[first[1] : second[0]]
    opener, closer = one[:start], one[end:]
    shared = not (closer.strip() and closer.strip() in gap)
    return _Syntax(opener, closer, gap if shared else "", shared, name_key, args_key, "")


def _name_first_syntax(one: str, two: str) -> _Syntax | None:
    name_at = one.find(_NAMES[0])
    args = re.search(r'\{\s*"probe_key"\s*:\s*"probe_value"\s*\}', one)
    if name_at < 0 or args is None or args.start() < name_at + len(_NAMES[0]):
        return None
    between = one[name_at + len(_NAMES[0]) : args.start()]
    if not between or "{" in between or "}" in between:  # (nothing between: no telling where a name ends)
        return None
    opener, closer = one[:name_at], one[args.end():]
    first = re.search(r'\{\s*"probe_key"\s*:\s*"probe_value"\s*\}', two)
    second_at = two.find(_NAMES[1])
    if first is None or second_at < first.end():
        return None
    gap = two[first.end() : second_at]
    shared = not (closer.strip() and closer.strip() in gap)
    return _Syntax(opener, closer, gap if shared else "", shared, "", "", between)


def _enclosing_object(text: str, name: str) -> tuple[int, int, str, str] | None:
    """The JSON object of ``text`` holding ``name`` as a value beside the probe's arguments:
    (start, end, the name's key, the arguments' key)."""
    at = text.find(json.dumps(name))
    decoder = json.JSONDecoder()
    for start in (i for i in range(at, -1, -1) if text[i] == "{") if at >= 0 else ():
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if not isinstance(obj, dict) or end <= at:
            continue
        keys = {v: k for k, v in obj.items() if isinstance(v, str)}
        args = [k for k, v in obj.items() if isinstance(v, dict) and str(v.get("probe_key")).startswith("probe_")]
        return (start, end, keys[name], args[0]) if name in keys and len(args) == 1 else None
    return None


def _tag_start(text: str, pos: int) -> int:
    """Where the tag open at ``pos`` (``<...`` or ``[...`` not closed before it) begins; ``pos``
    where none is."""
    for opener, closer in (("<", ">"), ("[", "]")):
        at = text.rfind(opener, max(0, pos - _MAX_TAG), pos)
        if at >= 0 and closer not in text[at:pos] and "\n" not in text[at:pos]:
            return at
    return pos


def _tag_end(text: str, pos: int) -> int:
    """Where the tag open at ``pos`` ends; ``pos`` where none is open."""
    at = _tag_start(text, pos)
    if at == pos:
        return pos
    end = text.find(">" if text[at] == "<" else "]", pos, pos + _MAX_TAG)
    return end + 1 if end >= 0 else pos
