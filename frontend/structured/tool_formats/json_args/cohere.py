"""Command R7B and Cohere2 MoE (North): one action section of a JSON list of calls, each with an
id, the function's name and its parameters, as the template writes them::

    <|START_ACTION|>[
        {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}},
        {"tool_call_id": "1", "tool_name": "add", "parameters": {"a": 1}}
    ]<|END_ACTION|>

The ids are not kept: the templates number past calls themselves (a tool result is matched to
its call by the call's id, whatever it is), so each call gets an OpenAI id unique in the
conversation. Thinking is ``<|START_THINKING|>...<|END_THINKING|>``.

Command R+ (tool use template): ``Action:`` and a fenced JSON list of calls, each the function's
name and its parameters, up to the end of the reply::

    Action:
    ```json
    [
        {"tool_name": "get_weather", "parameters": {"city": "Paris"}}
    ]
    ```
"""

from __future__ import annotations

import json
import re
from typing import Any

from frontend.structured import gbnf
from frontend.structured.tool_formats.base import ParsedCall, ToolFormat, arguments_text, json_list_calls, \
    json_list_grammar, name_first_head, name_object_alternatives

START = "<|START_ACTION|>"
END = "<|END_ACTION|>"
_HEAD = re.compile(r'\{\s*"tool_call_id"\s*:\s*"[^"]*"\s*,\s*"tool_name"\s*:\s*(?P<name>"(?:[^"\\]|\\.)*")\s*,\s*'
                   r'"parameters"\s*:\s*(?=\{)')
ACTION = "Action:"
FENCE_OPENER = ACTION + "\n```json\n"  # as the template writes past calls
# The fence after "Action:" ("json" after its opening optional, white space around the list).
_FENCED = re.compile(r"\s*```(?:json)?\s*(?P<list>.*?)\s*```\s*$", re.S)


class CohereFormat(ToolFormat):
    name = "cohere"
    starts = (START,)
    end = END
    call_head = _HEAD

    def parse(self, section: str) -> list[ParsedCall]:
        return json_list_calls(section, _call)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        ws = rules.fixed("ws", '| " " | "\\n" [ \\t]{0,16}')
        alts = [f'"{{" {ws} "\\"tool_call_id\\":" {ws} "\\"" [0-9]{{1,3}} "\\"" {ws} "," {ws} '
                f'"\\"tool_name\\":" {ws} {gbnf.literal(json.dumps(name))} {ws} "," {ws} '
                f'"\\"parameters\\":" {ws} {args} {ws} "}}"' for name, args in calls.items()]
        return json_list_grammar(rules, START, END, rules.add("tool-call-cohere", " | ".join(alts)), parallel)


class CommandRPlusFormat(ToolFormat):
    name = "command-r-plus"
    starts = (ACTION,)
    end = None
    described_parameters = True
    call_head = name_first_head("parameters", name_key="tool_name")

    def parse(self, section: str) -> list[ParsedCall]:
        fenced = _FENCED.match(section)
        if fenced is None:
            raise ValueError("Command R+ calls are a JSON list in a ```json block")
        return json_list_calls(fenced["list"], _call)

    def section_grammar(self, rules: gbnf.Rules, calls: dict[str, str], parallel: bool) -> str:
        one = name_object_alternatives(rules, calls, "parameters", "tool-call-command-r", name_key="tool_name")
        # The template closes the fence right after the list; Cohere's examples, on a line of its own.
        return f'{json_list_grammar(rules, FENCE_OPENER, "", one, parallel)} "\\n"? "```"'


def _call(obj: Any) -> ParsedCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("tool_name"), str) or not obj["tool_name"]:
        raise ValueError("a Cohere tool call needs a tool_name")
    return ParsedCall(obj["tool_name"], arguments_text(obj.get("parameters", {})))
