"""GLM 4.5 / 4.6 / 4.7 (and templates that copy them): a call is the function's name, then each
argument as a key and a value, in a Hermes-style section::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

(GLM 4.7 writes no new lines.) A value is raw text where the function's schema says string,
else JSON, as the template writes them (``tojson`` for all but strings), typed as Qwen's XML
calls type them (``typed_args``).

Tencent Hy3 writes the same calls with ``:opensource`` in each tag, ``tool_sep`` after the name,
and all of them in one ``tool_calls`` section::

    <tool_calls:opensource>
    <tool_call:opensource>get_weather<tool_sep:opensource>
    <arg_key:opensource>city</arg_key:opensource>
    <arg_value:opensource>Paris</arg_value:opensource>
    </tool_call:opensource>
    </tool_calls:opensource>

Hy3 thinks in ``<think:opensource>...</think:opensource>``.
"""

from __future__ import annotations

import re

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules

HY3_SUFFIX = ":opensource"
NL = "\n"


def _argument_pattern(suffix: str) -> re.Pattern[str]:
    s = re.escape(suffix)
    return re.compile(rf"<arg_key{s}>(.*?)</arg_key{s}>\s*<arg_value{s}>(.*?)</arg_value{s}>", re.S)


def _argument_head(suffix: str) -> re.Pattern[str]:
    s = re.escape(suffix)
    return re.compile(rf"\s*<arg_key{s}>(?P<key>.*?)</arg_key{s}>\s*<arg_value{s}>", re.S)


class GlmFormat(SchemaBound):
    name = "glm"
    starts = ("<tool_call>",)
    end = "</tool_call>"
    suffix = ""  # after each tag's name (Hy3's ":opensource")
    name_end = ""  # the tag after the function's name (Hy3's tool_sep); GLM's name ends at a new line or a key
    xml = XmlSyntax(call_head=re.compile(r"\s*(?P<name>[^\s<]+)\s*(?=<arg_key>)"), argument_head=_argument_head(""),
                    value_end="</arg_value>", call_end=None)
    _argument = _argument_pattern("")

    def tag(self, name: str) -> str:
        return f"<{name}{self.suffix}>"

    def parse(self, section: str) -> list[ParsedCall]:
        return [self._call(section)]

    def _call(self, text: str) -> ParsedCall:
        """A call from the text after its opener."""
        key = self.tag("arg_key")
        if self.name_end:
            name, sep, body = text.partition(self.tag(self.name_end))
            if not sep:
                raise ValueError(f"a call's name ends with {self.tag(self.name_end)}")
        else:
            name, _, body = text.partition(key)
            body = key + body if body else ""
        name = name.strip()
        if not name or "<" in name:
            raise ValueError("a GLM call starts with its function's name")
        if self._argument.sub("", body).strip():
            raise ValueError("text between the arguments of a GLM call")
        return ParsedCall(name, self.typed_arguments(name, self._argument.findall(body)))

    def one_call(self, rules: gbnf.Rules, calls: dict[str, str]) -> str:
        """The rule of a call after its opener, up to its closer."""
        # ``calls`` holds JSON-object rules; this format writes the arguments one by one instead.
        value_end = self.tag("/arg_value")
        text = gbnf.text_without(rules, value_end, f"{self.name}-text")
        name_end = [gbnf.literal(self.tag(self.name_end))] if self.name_end else []
        alts = []
        for name in calls:
            arguments = []
            for key, value, required in argument_rules(rules, self.schema(name), text):
                argument = (f'{gbnf.literal(self.tag("arg_key") + key + self.tag("/arg_key"))} "\\n"? '
                            f'{gbnf.literal(self.tag("arg_value"))} ({value}) {gbnf.literal(value_end)} "\\n"?')
                arguments.append(argument if required else f"({argument})?")
            alts.append(" ".join([gbnf.literal(name), *name_end, '"\\n"?', *arguments]))
        return rules.add(f"tool-call-{self.name}", " | ".join(alts))

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        return f'"<tool_call>" {self.one_call(rules, calls)} "</tool_call>"'


class Hy3Format(GlmFormat):
    name = "hy3"
    suffix = HY3_SUFFIX
    name_end = "tool_sep"
    starts = (f"<tool_calls{HY3_SUFFIX}>",)
    end = f"</tool_calls{HY3_SUFFIX}>"
    tokens = tuple(f"<{tag}{HY3_SUFFIX}>" for tag in (  # control tokens of its vocabulary, to read as text
        "tool_call", "/tool_call", "tool_sep", "arg_key", "/arg_key", "arg_value", "/arg_value"))
    xml = XmlSyntax(call_head=re.compile(rf"\s*<tool_call{HY3_SUFFIX}>\s*(?P<name>[^\s<]+)\s*<tool_sep{HY3_SUFFIX}>"),
                    argument_head=_argument_head(HY3_SUFFIX), value_end=f"</arg_value{HY3_SUFFIX}>",
                    call_end=re.compile(rf"\s*</tool_call{HY3_SUFFIX}>"))
    _argument = _argument_pattern(HY3_SUFFIX)
    _CALL = re.compile(rf"\s*<tool_call{HY3_SUFFIX}>(.*?)</tool_call{HY3_SUFFIX}>", re.S)

    def parse(self, section: str) -> list[ParsedCall]:
        calls, pos = [], 0
        while (call := self._CALL.match(section, pos)) is not None:
            calls.append(self._call(call[1]))
            pos = call.end()
        if not calls or section[pos:].strip():
            raise ValueError("a Hy3 tool_calls section holds calls only")
        return calls

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        call = f"{gbnf.literal(self.tag('tool_call'))} {self.one_call(rules, calls)} " \
               f"{gbnf.literal(self.tag('/tool_call') + NL)}"
        body = f"({call})+" if parallel else call
        return f"{gbnf.literal(self.starts[0] + NL)} {body} {gbnf.literal(self.end)}"


def is_hy3(template: str) -> bool:
    """Hy3's template builds its tags from the suffix (``'<tool_sep{}>'.format(HYTK)``)."""
    return HY3_SUFFIX in template and "<tool_sep" in template
