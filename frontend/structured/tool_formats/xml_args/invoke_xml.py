"""What MiniMax M2's and DeepSeek V3.2's calls share: a section of ``invoke`` elements named by
the function, each argument a ``parameter`` element named by its key::

    <BLOCK>
    <invoke name="get_weather">
    <parameter name="city">Paris</parameter>
    <parameter name="days">3</parameter>
    </invoke>
    </BLOCK>

(DeepSeek writes ``｜DSML｜`` after each tag's ``<`` or ``</``, and says on each parameter whether
its value is a string: ``string="true|false"``.) A value is raw text where the function's schema
(or the ``string`` attribute) says string, else JSON, as the templates write them (``tojson`` for
all but strings); reading them types them as Qwen's XML calls (``typed_args``).

The grammar writes the parameters as the templates do, one a line, each top-level property of
the schema in its order (the required ones present, the optional ones skippable, no others); a
string is any text up to the closing tag (an ``enum`` its alternatives), anything else its JSON
grammar; a function whose schema lists no properties takes any parameters (none if
``additionalProperties`` is false). Reading takes the parameters in any order.
"""

from __future__ import annotations

import json
import re

from frontend.structured import gbnf
from frontend.structured.json_schema import subschema_rule
from frontend.structured.tool_formats.base import ParsedCall
from frontend.structured.tool_formats.typed_args import SchemaBound, XmlSyntax, argument_rules, is_string, \
    typed_value

NL = "\n"


class InvokeXmlFormat(SchemaBound):
    """Set ``prefix`` (after each tag's ``<``), ``block`` (the section's element) and
    ``string_attr`` (parameters say whether they hold a string)."""

    prefix = ""
    block = ""
    string_attr = False
    _invoke: re.Pattern[str]
    _parameter: re.Pattern[str]

    def __init_subclass__(cls) -> None:
        p = re.escape(cls.prefix)
        cls.starts = (f"<{cls.prefix}{cls.block}>",)
        cls.end = f"</{cls.prefix}{cls.block}>"
        cls._invoke = re.compile(rf'<{p}invoke name="([^"]*)">(.*?)</{p}invoke>', re.S)
        cls._parameter = re.compile(rf'<{p}parameter name="([^"]*)"(?: string="(true|false)")?>(.*?)</{p}parameter>',
                                    re.S)
        cls.xml = XmlSyntax(
            call_head=re.compile(rf'\s*<{p}invoke name="(?P<name>[^"]*)">'),
            argument_head=re.compile(rf'\s*<{p}parameter name="(?P<key>[^"]*)"(?: string="(?P<string>true|false)")?>'),
            value_end=f"</{cls.prefix}parameter>", call_end=re.compile(rf"\s*</{p}invoke>"))

    def parse(self, section: str) -> list[ParsedCall]:
        calls, pos = [], 0
        for match in self._invoke.finditer(section):
            if section[pos : match.start()].strip():
                raise ValueError("text between the calls of an invoke section")
            pos = match.end()
            name, body = match[1].strip(), match[2]
            if not name or self._parameter.sub("", body).strip():
                raise ValueError("an invoke needs a name and holds only parameters")
            calls.append(ParsedCall(name, self._arguments(name, self._parameter.findall(body))))
        if not calls or section[pos:].strip():
            raise ValueError("an invoke section holds invoke elements only")
        return calls

    def _arguments(self, name: str, params: list[tuple[str, str, str]]) -> str:
        properties = self.schema(name).get("properties", {})
        out = {}
        for key, string, value in params:
            key = key.strip()
            if string == "true":
                out[key] = value
            elif string == "false":
                out[key] = typed_value(value, {})  # JSON (text if it does not parse)
            else:
                out[key] = typed_value(value, properties.get(key, {}))
        return json.dumps(out, ensure_ascii=False)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        one = rules.add(f"tool-call-{self.name}", " | ".join(self.invokes(rules, calls).values()))
        body = f"{one}+" if parallel else one
        return f"{gbnf.literal(self.starts[0] + NL)} {body} {gbnf.literal(self.end)}"

    def invokes(self, rules: gbnf.Rules, calls: dict[str, str]) -> dict[str, str]:
        """GBNF of each function's invoke element (and its new line), by name."""
        # ``calls`` holds JSON-object rules; this format writes the parameters one by one instead.
        p = self.prefix
        value_end = f"</{p}parameter>"
        text = gbnf.text_without(rules, value_end, f"{self.name}-text")
        invokes = {}
        for name in calls:
            schema = self.schema(name)
            params = []
            for key, value, required in argument_rules(rules, schema, text):
                string = is_string(schema["properties"][key])
                param = f"{self._parameter_head(key, string)} ({value}) {gbnf.literal(value_end + NL)}"
                params.append(param if required else f"({param})?")
            if not schema.get("properties") and schema.get("additionalProperties") is not False:
                params.append(f"({self._any_parameter(rules, text)})*")  # no properties listed: any
            invokes[name] = " ".join([gbnf.literal(f'<{p}invoke name="{name}">' + NL), *params,
                                      f'"\\n"? {gbnf.literal(f"</{p}invoke>" + NL)}'])
        return invokes

    def _parameter_head(self, key: str, string: bool) -> str:
        attr = f' string="{"true" if string else "false"}"' if self.string_attr else ""
        return gbnf.literal(f'<{self.prefix}parameter name="{key}"{attr}>')

    def _any_parameter(self, rules: gbnf.Rules, text: str) -> str:
        """A parameter of any name: raw text (DSML: or JSON, as its attribute says)."""
        head = f'{gbnf.literal(f"<{self.prefix}parameter name=")} "\\"" [a-zA-Z0-9_.-]{{1,64}} "\\""'
        end = gbnf.literal(f"</{self.prefix}parameter>" + NL)
        if not self.string_attr:
            return rules.add(f"{self.name}-any-parameter", f'{head} ">" {text} {end}')
        value = subschema_rule(rules, {}, {}, "json-value")
        return rules.add(f"{self.name}-any-parameter",
                         f'{head} (" string=\\"true\\">" {text} | " string=\\"false\\">" {value}) {end}')
