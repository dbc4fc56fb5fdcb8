"""Kimi K3: a reply is tagged sections ("XTML": ``<|open|>TAG attributes<|sep|>`` ...
``<|close|>TAG<|sep|>``, the markers control tokens): the thinking, the response, then the calls
in a ``tools`` section, each call named by a ``tool`` attribute, each argument by a ``key`` and
typed by a ``type`` attribute (one line here, wrapped)::

    <|open|>think<|sep|>...<|close|>think<|sep|><|open|>response<|sep|>On it.<|close|>response<|sep|>
    <|open|>tools<|sep|><|open|>call tool="get_weather" index="1"<|sep|>
    <|open|>argument key="city" type="string"<|sep|>Paris<|close|>argument<|sep|>
    <|open|>argument key="days" type="number"<|sep|>3<|close|>argument<|sep|>
    <|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>

Kimi K2's format (``json_args/kimi``) is gone: no section tokens, no ``functions.NAME:INDEX``
ids, arguments one by one instead of a JSON object. The generation prompt opens the thinking
(or, without thinking, the response), so the response's tags and the message's closer are framing,
dropped from the content (``skipped``, also for replies without calls: ``reader``), as is the
think closer where the thinking is not read out (reasoning_format ``none``), as llama.cpp drops it.
A value typed ``string`` is raw text, any other JSON, as the template writes them; a value without
a type is typed by the function's schema (``typed_args``). Attribute values are unescaped as the template
escapes them (``&amp;``, ``&quot;``). In a stream the arguments go out as they are written (``xml``).

The grammar writes each function's properties in the schema's order (the required ones present,
the optional ones skippable, no others), with the type the template would write: a string as text
up to the argument's closer (an ``enum``, its alternatives), anything else as JSON; the message's
closer may follow the section.
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules, is_string, \
    typed_value

OPEN, CLOSE, SEP, END_OF_MSG = "<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"
THINK_START = f"{OPEN}think{SEP}"
THINK_END = f"{CLOSE}think{SEP}"
RESPONSE_START = f"{OPEN}response{SEP}"
RESPONSE_END = f"{CLOSE}response{SEP}"
TOOLS_START = f"{OPEN}tools{SEP}"
TOOLS_END = f"{CLOSE}tools{SEP}"
MESSAGE_END = f"{CLOSE}message{SEP}"
ARG_END = f"{CLOSE}argument{SEP}"
_O, _C, _S = (re.escape(m) for m in (OPEN, CLOSE, SEP))
_CALL = re.compile(rf'\s*{_O}call tool="([^"]*)".*?{_S}(.*?){_C}call{_S}', re.S)  # (an index attribute too)
_ARGUMENT = re.compile(rf'{_O}argument key="([^"]*)"(.*?){_S}(.*?){re.escape(ARG_END)}', re.S)
_TYPE = re.compile(r'type="([^"]*)"')
_IN_HEAD = rf"(?:(?!{_S}).)"  # a character of a tag's attributes, which end at the first <|sep|>
QUOTE_SEP = '"' + SEP
_TYPE_WORDS = {"integer": "number", "number": "number", "boolean": "boolean", "null": "null", "object": "object",
               "array": "array"}  # the template's name of each JSON type but string
_ANY_TYPE_WORD = '("number" | "boolean" | "null" | "object" | "array")'


def _unescape(value: str) -> str:
    return value.replace("&quot;", '"').replace("&amp;", "&")


class KimiK3Format(SchemaBound):
    name = "kimi-k3"
    starts = (TOOLS_START,)
    end = TOOLS_END
    # framing dropped from the content (the think closer too where the thinking is not read out: llama.cpp's)
    skipped = (THINK_END, RESPONSE_START, RESPONSE_END, MESSAGE_END, END_OF_MSG)
    tokens = (OPEN, CLOSE, SEP, END_OF_MSG)  # control tokens, to read as text
    xml = XmlSyntax(
        call_head=re.compile(rf'\s*{_O}call tool="(?P<name>[^"]*)".*?{_S}', re.S),
        # the first type attribute before the <|sep|>, as _TYPE finds it in the attributes
        argument_head=re.compile(rf'\s*{_O}argument key="(?P<key>[^"]*)"'
                                 rf'(?:{_IN_HEAD}*?type="(?P<type>(?:(?!{_S})[^"])*)")?{_IN_HEAD}*?{_S}', re.S),
        value_end=ARG_END, call_end=re.compile(rf"\s*{_C}call{_S}"), key_text=_unescape)

    @property
    def thinking_enders(self) -> tuple[str, ...]:
        """The response's opener ends thinking the model never closed, as a call's opener does."""
        return (*self.starts, RESPONSE_START)

    def parse(self, section: str) -> list[ParsedCall]:
        calls, pos = [], 0
        while (call := _CALL.match(section, pos)) is not None:
            name, body = _unescape(call[1]).strip(), call[2]
            if not name or _ARGUMENT.sub("", body).strip():
                raise ValueError("a Kimi K3 call needs a tool and holds only arguments")
            properties = self.schema(name).get("properties", {})
            args = {}
            for key, attributes, raw in _ARGUMENT.findall(body):
                key, kind = _unescape(key), _TYPE.search(attributes)
                args[key] = typed_value(raw, {"type": kind[1]} if kind else properties.get(key, {}))
            calls.append(ParsedCall(name, json.dumps(args, ensure_ascii=False)))
            pos = call.end()
        if not calls or section[pos:].strip():
            raise ValueError("a Kimi K3 tools section holds calls only")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        # ``calls`` holds JSON-object rules; this format writes the arguments one by one instead.
        text = gbnf.text_without(rules, ARG_END, f"{self.name}-text")
        alts = []
        for name in calls:
            properties = self.schema(name).get("properties", {})
            arguments = []
            for key, value, required in argument_rules(rules, self.schema(name), text):
                head = f'{OPEN}argument key="{_escape(key)}" type="'
                argument = (f"{gbnf.literal(head)} {_type_word(properties[key])} {gbnf.literal(QUOTE_SEP)} ({value}) "
                            f"{gbnf.literal(ARG_END)}")
                arguments.append(argument if required else f"({argument})?")
            head = gbnf.literal(f'{OPEN}call tool="{_escape(name)}" index="')
            alts.append(" ".join([f'{head} [1-9] [0-9]{{0,2}} {gbnf.literal(QUOTE_SEP)}', *arguments,
                                  gbnf.literal(f"{CLOSE}call{SEP}")]))
        one = rules.add(f"tool-call-{self.name}", " | ".join(alts))
        body = f"{one}+" if parallel else one
        return f"{gbnf.literal(TOOLS_START)} {body} {gbnf.literal(TOOLS_END)} {gbnf.literal(MESSAGE_END)}?"


def is_kimi_k3(template: str) -> bool:
    """Its markers (the template writes its tags with macros: no whole tag is in its text)."""
    return OPEN in template and CLOSE in template and END_OF_MSG in template


def _type_word(schema: Any) -> str:
    """The ``type`` attribute the template writes for values of ``schema`` (any but ``string``
    where the schema does not say string: such a value is written as JSON)."""
    if is_string(schema):
        return '"string"'
    kind = schema.get("type") if isinstance(schema, dict) else None
    return gbnf.literal(_TYPE_WORDS[kind]) if isinstance(kind, str) and kind in _TYPE_WORDS else _ANY_TYPE_WORD


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;")
