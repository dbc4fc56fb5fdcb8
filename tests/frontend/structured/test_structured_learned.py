"""Tool-call formats learned from a template no known family matches: how the template writes a
probe call shows the syntax, which the reply parser and the call grammar then follow."""

from __future__ import annotations

import json

import pytest
from frontend_support import run_parser
from test_structured_grammar import accepts, tool_grammar

from frontend.structured.deltas import merge_calls
from frontend.structured.output import OutputParser
from frontend.structured.tool_formats.learned import LearnedFormat, template_format

TURNS = """{%- for m in messages %}<|{{ m.role }}|>
{%- if m.tool_calls %}{CALLS}{% else %}{{ m.content }}{% endif %}<|end|>
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}{% if tools %}{% endif %}"""
# Nemotron Nano v2's way: every call of a turn in one list
LIST = TURNS.replace("{CALLS}", '<TOOLCALL>[{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", '
                     '"arguments": {{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}'
                     "{% endfor %}]</TOOLCALL>")
# a section of its own for each call, the name first (Functionary v3.1's way)
NAME_FIRST = TURNS.replace("{CALLS}", "{% for c in m.tool_calls %}<function={{ c.function.name }}>"
                           "{{ c.function.arguments | tojson }}</function>{% endfor %}")
# objects under keys of the template's own choosing, one call a section
KEYED = TURNS.replace("{CALLS}", '{% for c in m.tool_calls %}<call>\n{"function": "{{ c.function.name }}", '
                      '"args": {{ c.function.arguments | tojson }}}\n</call>{% endfor %}')
TWO_CALLS = [("get_weather", {"city": "Paris", "days": [1, 2]}), ("ping", {})]


@pytest.mark.parametrize("template, reply", [
    (LIST, 'Sure.<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}, '
           '{"name": "ping", "arguments": {}}]</TOOLCALL>'),
    (NAME_FIRST, 'Sure.<function=get_weather>{"city": "Paris", "days": [1, 2]}</function><function=ping>{}</function>'),
    (KEYED, 'Sure.<call>\n{"function": "get_weather", "args": {"city": "Paris", "days": [1, 2]}}\n</call>'
            '<call>\n{"function": "ping", "args": {}}\n</call>'),
])
@pytest.mark.parametrize("stream", [False, True])
def test_calls_in_a_learned_format_are_read_whole_and_streamed(template, reply, stream):
    fmt = template_format(template)
    assert isinstance(fmt, LearnedFormat)
    parser = OutputParser(None, fmt, stream_args=stream)
    out = run_parser(parser, reply, 1 if stream else None)
    assert out.content == "Sure."
    assert [(c.name, json.loads(c.arguments)) for c in merge_calls(out.calls)] == TWO_CALLS


@pytest.mark.parametrize("template", [
    # arguments written as elements, not JSON
    TURNS.replace("{CALLS}", "{% for c in m.tool_calls %}<fn={{ c.function.name }}>{% for k, v in "
                  "c.function.arguments.items() %}<{{ k }}>{{ v }}</{{ k }}>{% endfor %}</fn>{% endfor %}"),
    # the call's id in its syntax
    TURNS.replace("{CALLS}", '{% for c in m.tool_calls %}<call id="{{ c.id }}">{{ c.function.name }}:'
                  "{{ c.function.arguments | tojson }}</call>{% endfor %}"),
    # no text that opens the calls
    TURNS.replace("{CALLS}", '{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", '
                  '"arguments": {{ c.function.arguments | tojson }}}{% endfor %}'),
    # markers that are text a reply may hold anyway: "A:" then "(", a bare list, a full stop
    TURNS.replace("{CALLS}", "{% for c in m.tool_calls %}A:{{ c.function.name }}({{ c.function.arguments | tojson }})"
                  "\n{% endfor %}").replace("{% if add_generation_prompt %}<|assistant|>", "{% if add_generation_prompt %}A:"),
    TURNS.replace("{CALLS}", '[{% for c in m.tool_calls %}{"name": "{{ c.function.name }}", "arguments": '
                  '{{ c.function.arguments | tojson }}}{% if not loop.last %}, {% endif %}{% endfor %}]'),
    TURNS.replace("{CALLS}", "{% for c in m.tool_calls %}<call>{{ c.function.name }} with "
                  "{{ c.function.arguments | tojson }}.\n{% endfor %}"),
    # nothing between the name and the arguments: no telling where the name ends
    TURNS.replace("{CALLS}", "<calls>{% for c in m.tool_calls %}{{ c.function.name }}{{ c.function.arguments | tojson }}"
                  "{% endfor %}</calls>"),
    # a template that renders what is not a string where the probe's arguments go
    TURNS.replace("{CALLS}", '{% for c in m.tool_calls %}<c>{"name": "{{ c.function.name }}", "arguments": '
                  '{"probe_key": {{ c.function.arguments | length }}}}</c>{% endfor %}'),
    TURNS.replace("{CALLS}", "{{ raise_exception('no calls') }}"),  # a template that refuses calls
    TURNS.replace("{CALLS}", ""),  # one that shows none
])
def test_a_syntax_not_learned_keeps_the_generic_format(template):
    assert template_format(template) is None


@pytest.mark.parametrize("parallel", [True, False])
def test_a_learned_grammar_writes_calls_as_the_template_does(tokenizer, parallel):
    """A shared section's calls with its separator, else a section each (the grammar tests'
    functions: get_weather needs a city, days at least 1)."""
    shared = tool_grammar(tokenizer, template_format(LIST), parallel)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"%s}}'
    assert accepts(tokenizer, shared, "<TOOLCALL>[" + call % "" + "]</TOOLCALL>")
    two = "<TOOLCALL>[" + call % "" + ', {"name": "ping", "arguments": {}}]</TOOLCALL>'
    assert accepts(tokenizer, shared, two) == parallel
    assert not accepts(tokenizer, shared, "<TOOLCALL>[" + call % ', "days": 0' + "]</TOOLCALL>")
    own = tool_grammar(tokenizer, template_format(NAME_FIRST), parallel)
    assert accepts(tokenizer, own, '<function=get_weather>{"city": "Paris"}</function>')
    assert accepts(tokenizer, own, '<function=get_weather>{"city": "Paris"}</function><function=ping>{}</function>') \
        == parallel
    assert not accepts(tokenizer, own, '<function=get_time>{"city": "Paris"}</function>')
