"""JSON schema / regex -> GBNF and the grammar checks, without a model: grammars are run over
token strings with the executor's grammar code on the embedded model's vocabulary."""

from __future__ import annotations

import json

import pytest
from frontend_support import gemma_path

from executor.sampling.sequence import Grammar, SeqSampler, SequenceFailed, _grammar_cache
from frontend.structured import gbnf
from frontend.structured.grammar import GrammarChecker, GrammarError
from frontend.structured.json_schema import SchemaError, schema_rule, schema_to_gbnf
from frontend.structured.reasoning import reasoning_for, thinking_first
from frontend.structured.tool_formats.json_args.apertus import ApertusFormat
from frontend.structured.tool_formats.json_args.cohere import CohereFormat, CommandRPlusFormat
from frontend.structured.tool_formats.xml_args.dsml import DsmlFormat, DsmlV4Format
from frontend.structured.tool_formats.json_args.functionary import FunctionaryFormat
from frontend.structured.tool_formats.own_syntax.gemma4 import Gemma4Format
from frontend.structured.tool_formats.json_args.gigachat import V3_OPENER, GigaChatFormat
from frontend.structured.tool_formats.json_args.harmony import HarmonyFormat, final_message
from frontend.structured.tool_formats.xml_args.glm import GlmFormat, Hy3Format
from frontend.structured.tool_formats.json_args.hermes import HermesFormat
from frontend.structured.tool_formats.json_args.json_list import AprielFormat, FireFunctionFormat, GraniteFormat
from frontend.structured.tool_formats.json_args.kimi import KimiFormat
from frontend.structured.tool_formats.xml_args.kimi_k3 import KimiK3Format
from frontend.structured.tool_formats.own_syntax.lfm2 import Lfm2Format
from frontend.structured.tool_formats.xml_args.minimax import MiniMaxM1Format, MiniMaxM2Format
from frontend.structured.tool_formats.xml_args.minicpm5 import MiniCpm5Format
from frontend.structured.tool_formats.xml_args.minimax_m3 import MiniMaxM3Format
from frontend.structured.tool_formats.xml_args.muse_glimmer import MuseGlimmerFormat
from frontend.structured.tool_formats.xml_args.qwen_xml import QwenXmlFormat, SeedXmlFormat
from frontend.structured.tool_formats.json_args.solar_open import SolarOpenFormat
from frontend.structured.tools import ToolPlan
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import SamplingParams
from tests.structured_schemas import SCHEMAS


def accepts(tokenizer: Tokenizer, grammar: str, text: str) -> bool:
    """Whether ``grammar`` generates exactly ``text`` (token by token, then end of generation)."""
    g = Grammar(_grammar_cache(tokenizer.vocab).new(grammar))
    try:
        for token in tokenizer.tokenize(text, add_special=False, parse_special=False):
            if not g.allows(token):
                return False
            g.accept(token)
        return g.allows(tokenizer.eos_id)
    finally:
        g.free()


VALID = {
    "flat_required": [{"name": "Ann", "age": 120}, {"name": "", "age": 0}],
    "nested_object": [{"user": {"id": -3, "name": "x"}, "active": False}],
    "array_bounds": [[1, -50], [50, 0, 7, 9]],
    "enum": [{"color": "blue"}],
    "const": [{"version": 2, "kind": "point"}],
    "any_of": [{"value": "hi"}, {"value": 12}, {"value": None}],
    "one_of_tagged": [{"kind": "circle", "r": 3}, {"kind": "square", "side": 10}],
    "refs_defs": [{"start": {"x": 1, "y": 2}, "end": {"x": -1, "y": 0}}],
    "recursive_ref": [{"label": "a", "children": [{"label": "b", "children": [{"label": "c"}]}]}],
    "format_date": [{"day": "2024-02-29"}],
    "format_uuid_email": [{"id": "123e4567-e89b-12d3-a456-426614174000", "when": "2024-01-01T10:00:00Z"}],
    "pattern": [{"code": "ABC-12"}],
    "optional_only": [{}, {"b": "x"}, {"a": 1, "c": True}, {"a": 1, "b": "q", "c": False}],
    "additional_properties": [{"x": 1}, {"x": 1, "y": 2, "abcdefgh": 3}],
    "nullable_types": [{"note": None, "count": 3}, {"note": "ok", "count": None}],
    "number_bounds": [{"score": 0}, {"score": 1}, {"score": 0.25}],
    "tuple_prefix_items": [["a", 1, True]],
    "all_of": [{"a": 1, "b": "x"}],
    "string_length": [{"word": "abcde"}],
}
INVALID = {
    "flat_required": [{"name": "Ann"}, {"name": "Ann", "age": 121}, {"name": "a" * 13, "age": 1}],
    "array_bounds": [[1], [1, 2, 3, 4, 5], [51, 1]],
    "enum": [{"color": "pink"}],
    "const": [{"version": 3, "kind": "point"}],
    "one_of_tagged": [{"kind": "circle", "side": 3}],
    "pattern": [{"code": "AB-12"}, {"code": "ABC-123"}],
    "optional_only": [{"d": 1}, {"c": True, "a": 1}],
    "additional_properties": [{"x": "s"}, {}, {"a": 1, "b": 2, "c": 3, "d": 4}, {"abcdefghi": 1}],
    "number_bounds": [{"score": 1.5}, {"score": -0.1}],
    "tuple_prefix_items": [["a", 1], ["a", 1, True, 2]],
    "string_length": [{"word": "a"}, {"word": "abcdef"}],
    "format_date": [{"day": "2024-13-01"}],
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_grammar_accepts_valid_and_rejects_invalid_documents(tokenizer, name):
    grammar = schema_to_gbnf(SCHEMAS[name])
    for doc in VALID[name]:
        for text in (json.dumps(doc), json.dumps(doc, indent=2), json.dumps(doc, separators=(",", ":"))):
            assert accepts(tokenizer, grammar, text), (name, text)
    for doc in INVALID.get(name, []):
        assert not accepts(tokenizer, grammar, json.dumps(doc)), (name, doc)


@pytest.mark.parametrize("pattern, good, bad", [
    ("^[a-z]+@[a-z]+\\.com$", ["ab@cd.com"], ["ab@cd.org", "@cd.com"]),
    ("^(foo|bar)?\\d{2,3}$", ["12", "foo123", "bar99"], ["foo1", "baz12", "1234"]),
    ("^[^x]\\w*$", ["a_1", "Z"], ["x1", ""]),
    ("ab", ["ab", "xxabyy"], ["a"]),
    ('^say "hi"\\\\$', ['say "hi"\\'], ["say hi"]),
    ("^.{2}$", ["é!", '""'], ["abc"]),
])
def test_pattern_strings(tokenizer, pattern, good, bad):
    grammar = schema_to_gbnf({"type": "string", "pattern": pattern})
    for text in good:
        assert accepts(tokenizer, grammar, json.dumps(text, ensure_ascii=False)), text
    for text in bad:
        assert not accepts(tokenizer, grammar, json.dumps(text, ensure_ascii=False)), text


@pytest.mark.parametrize("lo, hi", [(0, 0), (7, 7), (3, 250), (-17, 4), (-300, -12), (95, 1005), (None, 42), (-5, None)])
def test_integer_ranges_are_exact(tokenizer, lo, hi):
    schema = {"type": "integer"} | ({"minimum": lo} if lo is not None else {}) | ({"maximum": hi} if hi is not None else {})
    grammar = schema_to_gbnf(schema)
    lo_probe = -400 if lo is None else lo
    hi_probe = 1100 if hi is None else hi
    for value in list(range(lo_probe - 3, lo_probe + 4)) + list(range(hi_probe - 3, hi_probe + 4)) + [0, 1, 10, 99, 100]:
        inside = (lo is None or value >= lo) and (hi is None or value <= hi)
        assert accepts(tokenizer, grammar, str(value)) == inside, value
    assert not accepts(tokenizer, grammar, "007")


@pytest.mark.parametrize("schema, words", [
    ({"type": "string", "pattern": "(?=a)b"}, "lookaround"),
    ({"type": "string", "pattern": "(a)\\1"}, "backreference"),
    ({"not": {"type": "string"}}, "'not'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"$ref": "https://example.com/s.json"}, "only references inside"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]}, "'b' is required"),
    ({"type": "number", "minimum": 0.5}, "whole numbers"),
    ({"type": "strin"}, "unknown type"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "maxItems is below minItems"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "allow no integer"),
    ([1, 2], "must be an object"),
])
def test_unsupported_schemas_name_the_problem(schema, words):
    with pytest.raises(SchemaError, match=".*" + words.replace("(", "\\(").replace("?", "\\?")):
        schema_to_gbnf(schema)


@pytest.mark.parametrize("grammar, words", [
    ("root ::= foo", "Undefined rule identifier 'foo'"),
    ('rot ::= "a"', "'root' symbol"),
    ('root ::= root "a"', "left recursion"),
    ('root ::= "a', "unexpected end of input"),
    ("", "empty"),
])
def test_grammar_checker_reports_llama_cpp_reason(tokenizer, grammar, words):
    checker = GrammarChecker(tokenizer)
    with pytest.raises(GrammarError, match=words):
        checker.check(grammar)
    checker.check('root ::= "ok"')


@pytest.mark.parametrize("grammar", [
    'root ::= x{0,1999}\nx ::= "a"?',  # the audit's: one step longer than the step timeout
    'root ::= ("a" | "b"?){0,40}',  # 7.5 s per vocabulary check on 2 cores
    'root ::= "x" y{3,100}\ny ::= z\nz ::= "" | "q"',  # empty through other rules
    'root ::= ("a"{0,5}){0,100}',  # a repetition of a repetition that may be empty
])
def test_a_long_repetition_of_something_that_may_be_empty_is_refused(tokenizer, grammar):
    with pytest.raises(GrammarError, match="may match nothing"):
        GrammarChecker(tokenizer).check(grammar)


@pytest.mark.parametrize("grammar", [
    'root ::= (("a" | "b"?){0,6}){0,6}',  # short repetitions, nested: ~400 ms for 1,024 tokens
    'root ::= x x x x\nx ::= ("a" | "b"?){0,16}',  # ... or in a row: minutes a vocabulary
])
def test_repetitions_that_multiply_parse_states_are_refused_by_their_measured_cost(tokenizer, grammar):
    with pytest.raises(GrammarError, match="parse states"):
        GrammarChecker(tokenizer).check(grammar)


@pytest.mark.parametrize("grammar", [
    'root ::= [a-z]{0,1999}',  # long, but never empty: one parse state
    'root ::= ("a" | "b"?){0,16}',
    'root ::= x* "b"\nx ::= "a"?',  # llama.cpp's star of an empty-able item is cheap
    'root ::= x{0,3000}\nx ::= "a"?',  # past 2000 llama.cpp reads no bound: a star
    'root ::= ("a"{1,5}){0,100} # "a comment" [with] {0,99} (parts)',
    'root ::= "a"\nunused ::= ("a"?){0,100}',  # not reached from root
    'root ::= ' + '(' * 1500 + '"a"' + ')' * 1500,  # deeper than Python's recursion: measured instead
])
def test_repetitions_llama_cpp_runs_quickly_pass(tokenizer, grammar):
    GrammarChecker(tokenizer).check(grammar)


def test_the_schemas_converted_here_pass_the_repetition_check(tokenizer):
    checker = GrammarChecker(tokenizer)
    for schema in SCHEMAS.values():
        checker.check(schema_to_gbnf(schema))


def test_sampler_resamples_rejected_tokens_and_fails_on_a_dead_end(tokenizer):
    import numpy as np

    grammar = 'root ::= "yes" "\\x00"'  # nothing produces a NUL character: a dead end after "yes"
    sampler = SeqSampler(SamplingParams(temperature=0, grammar=grammar), tokenizer.vocab, tokenizer.n_vocab, -1, [])
    try:
        row = np.zeros(tokenizer.n_vocab, dtype=np.float32)
        (yes,) = tokenizer.tokenize("yes", add_special=False, parse_special=False)
        no = tokenizer.tokenize("no", add_special=False, parse_special=False)[0]
        row[no] = 10.0  # the model prefers "no": the grammar turns it into "yes"
        row[yes] = 1.0
        assert sampler.pick_constrained(row, int(np.argmax(row))) == yes
        with pytest.raises(SequenceFailed, match="dead end"):
            sampler.pick_constrained(row, int(np.argmax(row)))
    finally:
        sampler.free()
    sampled = SeqSampler(SamplingParams(temperature=1.0, top_k=40, seed=7, grammar='root ::= [0-9]+'),
                         tokenizer.vocab, tokenizer.n_vocab, -1, [])
    try:
        rng = np.random.default_rng(0)
        row = rng.standard_normal(tokenizer.n_vocab).astype(np.float32)
        assert tokenizer.piece(sampled.pick_constrained(row, 0)).decode().isdigit()
        row[tokenizer.eos_id] = -1e9  # the end is allowed now; keep sampling digits
        for _ in range(4):
            token = sampled.pick_constrained(row, 0)
            assert tokenizer.piece(token).decode().isdigit()
    finally:
        sampled.free()


@pytest.mark.parametrize("marker, good, bad", [
    ("<tool_call>", ["", "a < b", "<tool_cal", "<<tool_cal", "x <tool_calx <", "tool_call>"],
     ["<tool_call>", "<<tool_call>", "a<tool_call>b"]),
    ("aab", ["", "a", "aa", "aaa", "abab", "ba"], ["aab", "aaab", "xaabx"]),
    ("<|end|>", ["<|en", "<|<|end", "||end|>"], ["<|<|end|>", "hi<|end|>"]),
    # several markers, sharing a start and overlapping: thinking before a call or its end
    (("</think>", "<tool_call>", "<tool"), ["", "< /think> <too", "</thin", "<to<too", "<<</"],
     ["a</think>", "<tool_call>", "x<tool y", "</<tool", "<</think>"]),
])
def test_text_without_a_marker(tokenizer, marker, good, bad):
    rules = gbnf.Rules()
    rules.reserve("root")
    rules.define("root", gbnf.text_without(rules, marker))
    grammar = rules.text()
    assert all(accepts(tokenizer, grammar, t) for t in good), grammar
    assert not any(accepts(tokenizer, grammar, t) for t in bad), grammar


def test_thinking_before_a_forced_answer_cannot_open_a_call(tokenizer):
    """The reply's parser would read a call opener there as the end of the thinking."""
    rules = gbnf.Rules()
    rules.reserve("root")
    rules.define("root", thinking_first(rules, '"X"', reasoning_for("auto", "<think>\n"), opens=("<tool_call>",)))
    grammar = rules.text()
    assert accepts(tokenizer, grammar, "hmm <tool</think>\nX")
    assert not accepts(tokenizer, grammar, "hmm <tool_call> </think>X")


def test_harmony_tool_grammar(tokenizer):
    rules = gbnf.Rules()
    rules.reserve("root")
    args = schema_rule(rules, {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                       "f-args")
    rules.define("root", HarmonyFormat().section_grammar(rules, {"get_weather": args}, parallel=True))
    grammar = rules.text()
    call = '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Oslo"}'
    assert accepts(tokenizer, grammar, call)
    assert accepts(tokenizer, grammar, "<|channel|>analysis<|message|>hm, weather<|end|><|start|>assistant" + call)
    assert not accepts(tokenizer, grammar, call.replace("get_weather", "other"))
    assert not accepts(tokenizer, grammar, call.replace('"Oslo"', "5"))


def test_qwen_xml_tool_grammar(tokenizer):
    params = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]},
                                               "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}
    functions = [{"name": "get_weather", "parameters": params}]
    rules = gbnf.Rules()
    rules.reserve("root")
    rules.define("root", QwenXmlFormat(functions).section_grammar(rules, {"get_weather": "unused"}, parallel=False))
    grammar = rules.text()
    call = "<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n{}</function>\n</tool_call>"
    assert accepts(tokenizer, grammar, call.format(""))
    optional = "<parameter=unit>\nc\n</parameter>\n<parameter=days>\n3\n</parameter>\n"
    assert accepts(tokenizer, grammar, call.format(optional))
    assert not accepts(tokenizer, grammar, call.format("<parameter=days>\n0\n</parameter>\n"))
    assert not accepts(tokenizer, grammar, call.format("<parameter=unit>\nk\n</parameter>\n"))
    assert not accepts(tokenizer, grammar, call.replace("<parameter=city>\nNew York\n</parameter>\n", ""))


def test_seed_oss_tool_grammar(tokenizer):
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    rules = gbnf.Rules()
    rules.reserve("root")
    fmt = SeedXmlFormat([{"name": "get_weather", "parameters": params}])
    rules.define("root", fmt.section_grammar(rules, {"get_weather": "unused"}, parallel=False))
    call = "<seed:tool_call>\n<function=get_weather>\n<parameter=city>{}</parameter>\n</function>\n</seed:tool_call>"
    assert accepts(tokenizer, rules.text(), call.format("New York"))
    assert not accepts(tokenizer, rules.text(), call.format("\nNew York\n").replace("<seed:", "<"))


def test_kimi_tool_grammar(tokenizer):
    rules = gbnf.Rules()
    rules.reserve("root")
    args = schema_rule(rules, {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, "add")
    rules.define("root", KimiFormat().section_grammar(rules, {"add": args}, parallel=True))
    call = '<|tool_call_begin|>functions.add:{}<|tool_call_argument_begin|>{{"a": 1}}<|tool_call_end|>'
    section = "<|tool_calls_section_begin|>{}<|tool_calls_section_end|>"
    assert accepts(tokenizer, rules.text(), section.format(call.format(0) + call.format(1)))
    assert not accepts(tokenizer, rules.text(), section.format(call.format(0).replace("add", "sub")))


def test_glm_tool_grammar(tokenizer):
    params = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
              "required": ["city"]}
    rules = gbnf.Rules()
    rules.reserve("root")
    fmt = GlmFormat([{"name": "get_weather", "parameters": params}])
    rules.define("root", fmt.section_grammar(rules, {"get_weather": "unused"}, parallel=False))
    grammar = rules.text()
    call = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n{}</tool_call>"
    assert accepts(tokenizer, grammar, call.format(""))
    assert accepts(tokenizer, grammar, call.format("<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n"))
    assert accepts(tokenizer, grammar, "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Oslo</arg_value></tool_call>")
    assert not accepts(tokenizer, grammar, call.format("<arg_key>days</arg_key>\n<arg_value>0</arg_value>\n"))
    assert not accepts(tokenizer, grammar, "<tool_call>get_weather\n</tool_call>")  # city is required


@pytest.mark.parametrize("parallel", [True, False])
def test_hy3_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, Hy3Format(), parallel)
    call = ("<tool_call:opensource>get_weather<tool_sep:opensource>\n<arg_key:opensource>city</arg_key:opensource>\n"
            "<arg_value:opensource>New York</arg_value:opensource>\n{}</tool_call:opensource>\n")
    section = "<tool_calls:opensource>\n{}</tool_calls:opensource>"
    days = "<arg_key:opensource>days</arg_key:opensource>\n<arg_value:opensource>{}</arg_value:opensource>\n"
    assert accepts(tokenizer, grammar, section.format(call.format("")))
    assert accepts(tokenizer, grammar, section.format(call.format(days.format(3))))
    ping = "<tool_call:opensource>ping<tool_sep:opensource>\n</tool_call:opensource>\n"
    assert accepts(tokenizer, grammar, section.format(call.format("") + ping)) == parallel
    assert not accepts(tokenizer, grammar, section.format(call.format(days.format(0))))
    assert not accepts(tokenizer, grammar, section.format(ping.replace("ping", "get_weather")))  # city is required
    assert not accepts(tokenizer, grammar, section.format(call.format("")).replace(":opensource", ""))


def test_gemma4_tool_grammar(tokenizer):
    params = {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}, "Unit": {"enum": ["c", "f"]},
        "opts": {"type": "object", "properties": {"deep": {"type": "array"}}}}}
    functions = [{"name": "get_weather", "parameters": params}, {"name": "ping", "parameters": {}}]
    rules = gbnf.Rules()
    rules.reserve("root")
    section = Gemma4Format(functions).section_grammar(rules, {"get_weather": "", "ping": ""}, parallel=True)
    rules.define("root", f"({section})+")  # calls following each other, as tools._grammar allows them
    grammar = rules.text()
    call = '<|tool_call>call:get_weather{{city:<|"|>Paris, France: {{centre}}<|"|>{}}}<tool_call|>'
    assert accepts(tokenizer, grammar, call.format(""))
    assert accepts(tokenizer, grammar, call.format(',days:3,opts:{deep:[<|"|>a<|"|>,-1.5e3,null,{<|"|>k<|"|>:true}]}'
                                                   ',Unit:<|"|>f<|"|>'))  # keys sorted as dictsort sorts them
    assert accepts(tokenizer, grammar, call.format("") + '<|tool_call>call:ping{}<tool_call|>'
                                       '<|tool_call>call:ping{any:[1],<|"|>quoted key<|"|>:{x:<|"|><|"|>}}<tool_call|>')
    assert not accepts(tokenizer, grammar, call.format("").replace("get_weather", "get_time"))  # no such function
    assert not accepts(tokenizer, grammar, '<|tool_call>call:get_weather{days:3}<tool_call|>')  # city is required
    assert not accepts(tokenizer, grammar, call.format(',days:<|"|>3<|"|>'))  # a string where a number belongs
    assert not accepts(tokenizer, grammar, call.format(",days:0"))  # below the minimum
    assert not accepts(tokenizer, grammar, call.format(',Unit:<|"|>k<|"|>'))  # not in the enum
    assert not accepts(tokenizer, grammar, call.format(',Unit:<|"|>f<|"|>,days:3'))  # not in the template's order
    assert not accepts(tokenizer, grammar, '<|tool_call>call:get_weather{city:Paris}<tool_call|>')  # unquoted


def test_harmony_final_message_frame(tokenizer):
    grammar = schema_to_gbnf({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                             final_message)
    assert accepts(tokenizer, grammar, '<|channel|>final<|message|>{"a": 1}')
    assert accepts(tokenizer, grammar, '<|channel|>analysis<|message|>hm<|end|><|start|>assistant'
                                       '<|channel|>final<|message|>{"a": 1}')
    assert not accepts(tokenizer, grammar, '{"a": 1}')


def test_an_earlier_tokenizers_checker_still_hears_llama_cpps_reason(tokenizer):
    """llama.cpp's log callback is process-wide and the capture installed last hears it; a
    router-mode worker holds a tokenizer per model, so the first model's checker must still
    get the reason of a grammar llama.cpp refuses."""
    later = Tokenizer(gemma_path())
    try:
        with pytest.raises(GrammarError, match="left recursion"):
            GrammarChecker(tokenizer).check('root ::= root "a"')
    finally:
        later.close()


def test_tools_with_a_response_format_allow_calls_or_the_formats_json(tokenizer):
    answer = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    plan = ToolPlan([], None, HermesFormat(), [{"name": "f", "parameters": {"type": "object", "properties": {}}}])
    grammar = plan.grammar(None, answer)
    assert accepts(tokenizer, grammar, '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert accepts(tokenizer, grammar, '{"answer": "no"}')
    assert not accepts(tokenizer, grammar, "Sure, here it is")  # no free text: the format holds
    plan.forced = True  # forced calls: the format waits for the turn after the results
    assert not accepts(tokenizer, plan.grammar(None, answer), '{"answer": "no"}')


WEATHER = {"type": "object", "required": ["city"], "properties": {
    "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1},
    "opts": {"type": "object", "properties": {"metric": {"type": "boolean"}}, "required": ["metric"]}}}
FUNCTIONS = [{"name": "get_weather", "parameters": WEATHER}, {"name": "ping", "parameters": {}}]


def tool_grammar(tokenizer: Tokenizer, fmt, parallel: bool = True, forced: bool = True) -> str:
    """The reply grammar of a request with FUNCTIONS, as the server builds and checks it."""
    grammar = ToolPlan([], None, fmt.bind(FUNCTIONS), FUNCTIONS, forced=forced, parallel=parallel).grammar()
    GrammarChecker(tokenizer).check(grammar)  # llama.cpp takes it, at a cost the server accepts
    return grammar


@pytest.mark.parametrize("parallel", [True, False])
def test_minimax_m2_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, MiniMaxM2Format(), parallel)
    call = '<invoke name="get_weather">\n<parameter name="city">New York</parameter>\n{}</invoke>\n'
    section = "<minimax:tool_call>\n{}</minimax:tool_call>"
    optional = ('<parameter name="unit">c</parameter>\n<parameter name="days">3</parameter>\n'
                '<parameter name="opts">{"metric": true}</parameter>\n')
    assert accepts(tokenizer, grammar, section.format(call.format("")))
    assert accepts(tokenizer, grammar, section.format(call.format(optional)))
    two = '<invoke name="ping">\n</invoke>\n' + call.format("")
    assert accepts(tokenizer, grammar, section.format(two)) == parallel
    assert not accepts(tokenizer, grammar, section.format(call.format('<parameter name="unit">k</parameter>\n')))
    assert not accepts(tokenizer, grammar, section.format(call.format('<parameter name="days">0</parameter>\n')))
    assert not accepts(tokenizer, grammar, section.format(call.format('<parameter name="opts">{}</parameter>\n')))
    assert not accepts(tokenizer, grammar, section.format('<invoke name="get_weather">\n</invoke>\n'))  # city
    # a function whose schema lists no properties takes any
    assert accepts(tokenizer, grammar, section.format('<invoke name="ping">\n<parameter name="x.y">a\nb</parameter>\n'
                                                      '</invoke>\n'))


@pytest.mark.parametrize("parallel", [True, False])
def test_minimax_m3_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, MiniMaxM3Format(), parallel)
    ns = "]<]minimax[>["
    call = f'{ns}<invoke name="get_weather">{ns}<city>New York{ns}</city>{{}}{ns}</invoke>\n'
    section = f"{ns}<tool_call>\n{{}}{ns}</tool_call>"
    # as the template writes them: the schema's order, a nested object as elements
    optional = f"{ns}<unit>c{ns}</unit>{ns}<days>3{ns}</days>{ns}<opts>{ns}<metric>true{ns}</metric>{ns}</opts>"
    assert accepts(tokenizer, grammar, section.format(call.format("")))
    assert accepts(tokenizer, grammar, section.format(call.format(optional)))
    assert accepts(tokenizer, grammar, section.format(call.format("") + f'{ns}<invoke name="ping">{ns}</invoke>\n')) \
        == parallel
    assert not accepts(tokenizer, grammar, section.format(call.format(f"{ns}<unit>k{ns}</unit>")))
    assert not accepts(tokenizer, grammar, section.format(call.format(f"{ns}<days>0{ns}</days>")))
    assert not accepts(tokenizer, grammar, section.format(call.format(f'{ns}<opts>{{"metric": true}}{ns}</opts>')))
    assert not accepts(tokenizer, grammar, section.format(call.format(f"{ns}<opts>{ns}</opts>")))  # metric
    assert not accepts(tokenizer, grammar, section.format(call.format(f"{ns}<days>3{ns}</days>{ns}<unit>c{ns}</unit>")))
    assert not accepts(tokenizer, grammar, section.format(f'{ns}<invoke name="get_weather">{ns}</invoke>\n'))  # city
    assert not accepts(tokenizer, grammar, section.format(call.format("")).replace(ns, ""))


def test_minimax_m3_grammar_writes_arrays_and_unions_as_elements(tokenizer):
    params = {"type": "object", "required": ["tags"], "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "limit": {"oneOf": [{"type": "integer"}, {"type": "object", "properties": {"max": {"type": "integer"}}}]},
        "label": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    functions = [{"name": "f", "parameters": params}]
    grammar = ToolPlan([], None, MiniMaxM3Format(functions), functions, forced=True).grammar()
    ns = "]<]minimax[>["
    call = f'{ns}<tool_call>\n{ns}<invoke name="f">{ns}<tags>{{}}{ns}</tags>{{}}{ns}</invoke>\n{ns}</tool_call>'
    item = f"{ns}<item>{{}}{ns}</item>"
    assert accepts(tokenizer, grammar, call.format("", ""))
    assert accepts(tokenizer, grammar, call.format(item.format("a b") + item.format("c"), f"{ns}<limit>5{ns}</limit>"))
    assert accepts(tokenizer, grammar, call.format("", f"{ns}<limit>{ns}<max>5{ns}</max>{ns}</limit>"))
    assert accepts(tokenizer, grammar, call.format("", f"{ns}<label>null{ns}</label>"))  # text: a string
    assert not accepts(tokenizer, grammar, call.format(item.format("a") * 3, ""))  # maxItems
    assert not accepts(tokenizer, grammar, call.format("", f"{ns}<limit>five{ns}</limit>"))


@pytest.mark.parametrize("parallel", [True, False])
def test_minicpm5_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, MiniCpm5Format(), parallel)
    call = '<function name="get_weather"><param name="city">{}</param>{}</function>'
    optional = '<param name="unit">f</param><param name="days">3</param><param name="opts">{"metric": true}</param>'
    assert accepts(tokenizer, grammar, call.format("New York", ""))
    assert accepts(tokenizer, grammar, call.format("<![CDATA[a <b> & </param>\nc]]>", optional))
    assert accepts(tokenizer, grammar, call.format("Paris", "") + '\n<function name="ping"></function>') == parallel
    assert not accepts(tokenizer, grammar, call.format("a\n</param>", ""))  # a string that closes the tag
    assert not accepts(tokenizer, grammar, call.format("Paris", '<param name="days">0</param>'))
    assert not accepts(tokenizer, grammar, call.format("Paris", '<param name="unit">k</param>'))
    assert not accepts(tokenizer, grammar, call.format("Paris", "<param name=\"opts\">{'metric': True}</param>"))
    assert not accepts(tokenizer, grammar, '<function name="get_weather"><param name="days">3</param></function>')


@pytest.mark.parametrize("parallel", [True, False])
def test_kimi_k3_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, KimiK3Format(), parallel)
    call = ('<|open|>call tool="get_weather" index="{}"<|sep|><|open|>argument key="city" type="string"<|sep|>'
            "{}<|close|>argument<|sep|>{}<|close|>call<|sep|>")
    section = "<|open|>tools<|sep|>{}<|close|>tools<|sep|>"
    optional = ('<|open|>argument key="unit" type="string"<|sep|>f<|close|>argument<|sep|>'
                '<|open|>argument key="days" type="number"<|sep|>3<|close|>argument<|sep|>'
                '<|open|>argument key="opts" type="object"<|sep|>{"metric": true}<|close|>argument<|sep|>')
    assert accepts(tokenizer, grammar, section.format(call.format(1, "New York", "")))
    assert accepts(tokenizer, grammar, section.format(call.format(1, "a <b>\n&", optional)) + "<|close|>message<|sep|>")
    two = call.format(1, "Paris", "") + '<|open|>call tool="ping" index="2"<|sep|><|close|>call<|sep|>'
    assert accepts(tokenizer, grammar, section.format(two)) == parallel
    days = '<|open|>argument key="days" type="{}"<|sep|>{}<|close|>argument<|sep|>'
    assert not accepts(tokenizer, grammar, section.format(call.format(1, "Paris", days.format("string", 3))))
    assert not accepts(tokenizer, grammar, section.format(call.format(1, "Paris", days.format("number", 0))))
    assert not accepts(tokenizer, grammar, section.format(call.format(1, "Paris", days.format("number", '"3"'))))
    assert not accepts(tokenizer, grammar, section.format(call.format(1, "Paris<|close|>argument<|sep|>", "")))
    assert not accepts(tokenizer, grammar, section.format(call.format(1, "Paris", "").replace("city", "town")))


def test_dsml_tool_grammar(tokenizer):
    grammar = tool_grammar(tokenizer, DsmlFormat())
    call = ('<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
            '{}</｜DSML｜invoke>\n')
    section = "<｜DSML｜function_calls>\n{}</｜DSML｜function_calls>"
    days = '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    assert accepts(tokenizer, grammar, section.format(call.format(days)))
    ping = '<｜DSML｜invoke name="ping">\n</｜DSML｜invoke>\n'
    assert accepts(tokenizer, grammar, section.format(call.format("") + ping))
    any_args = ('<｜DSML｜invoke name="ping">\n<｜DSML｜parameter name="a" string="false">[1, {"b": null}]'
                '</｜DSML｜parameter>\n<｜DSML｜parameter name="c" string="true">text</｜DSML｜parameter>\n</｜DSML｜invoke>\n')
    assert accepts(tokenizer, grammar, section.format(any_args))
    assert not accepts(tokenizer, grammar, section.format(any_args.replace("[1,", "[1 2,")))
    assert not accepts(tokenizer, grammar, section.format(call.format(days.replace('"false"', '"true"'))))
    assert not accepts(tokenizer, grammar, section.format(call.format("")).replace("function_calls", "tool_calls"))
    v4 = tool_grammar(tokenizer, DsmlV4Format())
    assert accepts(tokenizer, v4, "<｜DSML｜tool_calls>\n" + call.format("") + "</｜DSML｜tool_calls>")


def test_minimax_m1_tool_grammar(tokenizer):
    grammar = tool_grammar(tokenizer, MiniMaxM1Format())
    assert accepts(tokenizer, grammar, '<tool_calls>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                                       '{"name": "ping", "arguments": {}}\n</tool_calls>')
    assert not accepts(tokenizer, grammar, '<tool_calls>\n{"name": "get_weather", "arguments": {}}\n</tool_calls>')


@pytest.mark.parametrize("parallel", [True, False])
def test_cohere_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, CohereFormat(), parallel)
    call = '{{"tool_call_id": "{}", "tool_name": "get_weather", "parameters": {{"city": "Paris"{}}}}}'
    action = "<|START_ACTION|>[{}]<|END_ACTION|>"
    assert accepts(tokenizer, grammar, action.format("\n    " + call.format(0, "") + "\n"))
    two = "\n    " + call.format(0, "") + ",\n    " + call.format(1, ', "days": 2') + "\n"
    assert accepts(tokenizer, grammar, action.format(two)) == parallel
    assert not accepts(tokenizer, grammar, action.format(call.format(0, ', "days": 0')))
    assert not accepts(tokenizer, grammar, action.format(call.format(0, "").replace("get_", "set_")))


@pytest.mark.parametrize("parallel", [True, False])
def test_apertus_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, ApertusFormat(), parallel)
    assert accepts(tokenizer, grammar, '<|tools_prefix|>[{"get_weather": {"city": "Paris"}}]<|tools_suffix|>')
    two = '<|tools_prefix|>[{"get_weather": {"city": "Paris", "unit": "f"}}, {"ping": {}}]<|tools_suffix|>'
    assert accepts(tokenizer, grammar, two) == parallel
    assert not accepts(tokenizer, grammar, '<|tools_prefix|>[{"get_weather": {"unit": "f"}}]<|tools_suffix|>')


@pytest.mark.parametrize("parallel", [True, False])
def test_lfm2_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, Lfm2Format(), parallel)
    section = "<|tool_call_start|>[{}]<|tool_call_end|>"
    assert accepts(tokenizer, grammar, section.format("get_weather(city='Paris')"))
    # strings double-quoted too: as llama.cpp's tests write them, and as past calls are written into a turn
    assert accepts(tokenizer, grammar, section.format('get_weather(city="Paris", unit="f")'))
    assert accepts(tokenizer, grammar, Lfm2Format().write_calls([("get_weather", {"city": "Paris", "unit": "f"})]))
    assert accepts(tokenizer, grammar, section.format(
        "get_weather(city='It\\'s \"Paris\"', unit='f', days=3, opts={\"metric\": true})"))
    assert accepts(tokenizer, grammar, section.format("get_weather(city='Paris'), ping()")) == parallel
    assert accepts(tokenizer, grammar, section.format("ping(anything=[1, {\"a\": null}], b=\"x\")"))
    assert not accepts(tokenizer, grammar, section.format("get_weather(days=3)"))  # city is required
    assert not accepts(tokenizer, grammar, section.format("get_weather(city='Paris', days=0)"))
    assert not accepts(tokenizer, grammar, section.format("get_weather(days=3, city='Paris')"))  # the schema's order
    assert not accepts(tokenizer, grammar, section.format("get_weather(city='Paris', unit='k')"))
    assert not accepts(tokenizer, grammar, section.format("get_weather(city='Paris', opts={})"))
    # Python's reader takes no raw carriage return in a string: the call would not read
    assert not accepts(tokenizer, grammar, section.format("get_weather(city='Pa\rris')"))
    assert accepts(tokenizer, grammar, section.format("get_weather(city='Pa\\rris')"))


def test_lfm2_grammar_writes_python_booleans_and_none(tokenizer):
    functions = [{"name": "f", "parameters": {"type": "object", "properties": {
        "on": {"type": "boolean"}, "off": {"type": "null"}}, "required": ["on", "off"]}}]
    grammar = ToolPlan([], None, Lfm2Format(functions), functions, forced=True).grammar()
    assert accepts(tokenizer, grammar, "<|tool_call_start|>[f(on=True, off=None)]<|tool_call_end|>")
    assert not accepts(tokenizer, grammar, "<|tool_call_start|>[f(on=true, off=null)]<|tool_call_end|>")
    [call] = Lfm2Format().parse("[f(on=True, off=None)]")
    assert json.loads(call.arguments) == {"on": True, "off": None}


@pytest.mark.parametrize("fmt, call", [
    (MiniMaxM2Format(), '<minimax:tool_call>\n<invoke name="ping">\n</invoke>\n</minimax:tool_call>'),
    (MiniMaxM1Format(), '<tool_calls>\n{"name": "ping", "arguments": {}}\n</tool_calls>'),
    (MiniCpm5Format(), '<function name="ping"></function>'),
    (Hy3Format(), "<tool_calls:opensource>\n<tool_call:opensource>ping<tool_sep:opensource>\n</tool_call:opensource>\n"
                  "</tool_calls:opensource>"),
    (KimiK3Format(), '<|open|>tools<|sep|><|open|>call tool="ping" index="1"<|sep|><|close|>call<|sep|>'
                     "<|close|>tools<|sep|>"),
    (MiniMaxM3Format(), ']<]minimax[>[<tool_call>\n]<]minimax[>[<invoke name="ping">]<]minimax[>[</invoke>\n'
                        "]<]minimax[>[</tool_call>"),
    (DsmlFormat(), '<｜DSML｜function_calls>\n<｜DSML｜invoke name="ping">\n</｜DSML｜invoke>\n</｜DSML｜function_calls>'),
    (CohereFormat(), '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "ping", "parameters": {}}]<|END_ACTION|>'),
    (Lfm2Format(), "<|tool_call_start|>[ping()]<|tool_call_end|>"),
    (ApertusFormat(), '<|tools_prefix|>[{"ping": {}}]<|tools_suffix|>'),
    (GraniteFormat(), '<|tool_call|>[{"name": "ping", "arguments": {}}]'),
    (AprielFormat(), '<tool_calls>[{"name": "ping", "arguments": {}}]</tool_calls>'),
    (CommandRPlusFormat(), 'Action:\n```json\n[{"tool_name": "ping", "parameters": {}}]\n```'),
    (GigaChatFormat(), '<|function_call|>{"name": "ping", "arguments": {}}'),
    (FireFunctionFormat(), ' functools[{"name": "ping", "arguments": {}}]'),
    (SolarOpenFormat(), '<|tool_calls|><|tool_call:begin|>a1b2c3d4e5<|tool_call:name|>ping<|tool_call:args|>{}'
                        '<|tool_call:end|>'),
])
def test_new_formats_allow_text_then_a_call_when_the_choice_is_auto(tokenizer, fmt, call):
    grammar = tool_grammar(tokenizer, fmt, forced=False)
    assert accepts(tokenizer, grammar, "Let me see. " + call)
    assert accepts(tokenizer, grammar, "No call needed.")


def test_functionary_tool_grammar(tokenizer):
    """The output after the prompt's ">>>": forced, calls from the first token; auto, text to
    "all" that may end in calls, or calls; with a response format, its JSON to "all"."""
    call = 'get_weather\n{"city": "Paris"}'
    forced = tool_grammar(tokenizer, FunctionaryFormat())
    assert accepts(tokenizer, forced, call) and accepts(tokenizer, forced, call + ">>>ping\n{}")
    assert not accepts(tokenizer, forced, "all\nSure.>>>" + call)
    assert not accepts(tokenizer, forced, 'get_weather\n{"days": 1}')
    auto = tool_grammar(tokenizer, FunctionaryFormat(), forced=False)
    assert accepts(tokenizer, auto, "all\nSure, let me look.>>>" + call)
    assert accepts(tokenizer, auto, "all\nNo call needed.") and accepts(tokenizer, auto, call)
    assert not accepts(tokenizer, auto, "Sure.")  # no recipient
    assert not accepts(tokenizer, auto, "all\nSure.>>>all\nMore.")
    fmt = FunctionaryFormat().bind(FUNCTIONS)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    answer = ToolPlan([], None, fmt, FUNCTIONS).grammar(None, schema)
    assert accepts(tokenizer, answer, 'all\n{"x": 1}') and accepts(tokenizer, answer, call)
    assert not accepts(tokenizer, answer, '{"x": 1}')


@pytest.mark.parametrize("parallel", [True, False])
def test_granite_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, GraniteFormat(), parallel)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert accepts(tokenizer, grammar, f"<|tool_call|>[{call}]")
    assert accepts(tokenizer, grammar, GraniteFormat().write_calls([("get_weather", {"city": "Paris", "days": 2})]))
    assert accepts(tokenizer, grammar, f'<|tool_call|>[{call}, {{"name": "ping", "arguments": {{}}}}]') == parallel
    assert not accepts(tokenizer, grammar, '<|tool_call|>[{"name": "get_weather", "arguments": {"days": 2}}]')
    assert not accepts(tokenizer, grammar, f"<|tool_call|>{call}")  # a list, even of one call


@pytest.mark.parametrize("parallel", [True, False])
def test_apriel_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, AprielFormat(), parallel)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert accepts(tokenizer, grammar, f"<tool_calls>[{call}]</tool_calls>")
    assert accepts(tokenizer, grammar, f'<tool_calls>[{call}, {{"name": "ping", "arguments": {{}}}}]</tool_calls>') \
        == parallel
    assert not accepts(tokenizer, grammar, '<tool_calls>[{"name": "get_weather", "arguments": {}}]</tool_calls>')
    assert not accepts(tokenizer, grammar, f"<tool_calls>[{call}]")  # the closer


def test_reka_edge_calls_fit_the_hermes_grammar(tokenizer):
    """Reka Edge writes Hermes' blocks, without a new line before each closer or between them
    (as its template and llama.cpp's test-chat write them)."""
    grammar = tool_grammar(tokenizer, HermesFormat())
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    assert accepts(tokenizer, grammar, call) and accepts(tokenizer, grammar, call + call)
    assert not accepts(tokenizer, grammar, call.replace("city", "town"))  # city is required


@pytest.mark.parametrize("parallel", [True, False])
def test_command_r_plus_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, CommandRPlusFormat(), parallel)
    call = '{"tool_name": "get_weather", "parameters": {"city": "Paris"}}'
    assert accepts(tokenizer, grammar, f"Action:\n```json\n[{call}]\n```")  # llama.cpp's test-chat
    assert accepts(tokenizer, grammar, f"Action:\n```json\n[\n    {call}\n]```")  # as the template writes it
    two = f'Action:\n```json\n[{call}, {{"tool_name": "ping", "parameters": {{}}}}]\n```'
    assert accepts(tokenizer, grammar, two) == parallel
    assert not accepts(tokenizer, grammar, 'Action:\n```json\n[{"tool_name": "get_weather", "parameters": {}}]\n```')
    assert not accepts(tokenizer, grammar, f"Action:\n```json\n[{call}]")  # the fence closes


@pytest.mark.parametrize("opener", [V3_OPENER, "<|function_call|>"])
def test_gigachat_tool_grammar(tokenizer, opener):
    grammar = tool_grammar(tokenizer, GigaChatFormat(opener))  # parallel asked: one call all the same
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert accepts(tokenizer, grammar, opener + call)
    assert not accepts(tokenizer, grammar, opener + call + opener + call)
    assert not accepts(tokenizer, grammar, opener + '{"name": "get_weather", "arguments": {"days": 2}}')
    assert accepts(tokenizer, tool_grammar(tokenizer, GigaChatFormat(opener), forced=False), "Sure." + opener + call)


@pytest.mark.parametrize("parallel", [True, False])
def test_firefunction_v2_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, FireFunctionFormat(), parallel)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert accepts(tokenizer, grammar, f" functools[{call}]")
    assert accepts(tokenizer, grammar, f' functools[{call}, {{"name": "ping", "arguments": {{}}}}]') == parallel
    assert not accepts(tokenizer, grammar, ' functools[{"name": "get_weather", "arguments": {"days": 1}}]')
    assert not accepts(tokenizer, grammar, f" functools{call}")


@pytest.mark.parametrize("parallel", [True, False])
def test_solar_open_tool_grammar(tokenizer, parallel):
    grammar = tool_grammar(tokenizer, SolarOpenFormat(), parallel)
    call = ('<|tool_call:begin|>{}<|tool_call:name|>get_weather<|tool_call:args|>{{"city": "Paris"}}'
            '<|tool_call:end|>')
    assert accepts(tokenizer, grammar, "<|tool_calls|>" + call.format("a1b2c3d4e5"))
    assert accepts(tokenizer, grammar, "<|begin|>assistant<|tool_calls|>" + call.format("a1b2c3d4e5"))  # a new message
    assert accepts(tokenizer, grammar, "<|tool_calls|>" + call.format("a1b2c3d4e5") + call.format("0000000000")) \
        == parallel
    assert not accepts(tokenizer, grammar, "<|tool_calls|>" + call.format("A1b2c3d4e5"))  # ids: lowercase, 10
    assert not accepts(tokenizer, grammar, "<|tool_calls|>" + call.format("a1b2c3d4e5").replace('"city"', '"town"'))


def test_muse_glimmer_tool_grammar(tokenizer):
    """The output after the prompt's "<|start|>assistant": forced, call messages from the first
    token; auto, messages to itself, then an answer that may end in calls, or calls; with a
    response format, its JSON in the answer."""
    call = ('<|message|><atem:function_calls>\n<atem:invoke name="get_weather">\n<atem:parameter name="city">Paris'
            "</atem:parameter>\n</atem:invoke>\n</atem:function_calls>")
    ping = ' to=ping<|message|><atem:function_calls>\n<atem:invoke name="ping">\n</atem:invoke>\n</atem:function_calls>'
    forced = tool_grammar(tokenizer, MuseGlimmerFormat())
    assert accepts(tokenizer, forced, " to=get_weather" + call)
    assert accepts(tokenizer, forced, " to=get_weather" + call + "<|eom|><|start|>assistant" + ping)
    assert not accepts(tokenizer, forced, " to=get_weather" + call.replace("city", "town"))
    assert not accepts(tokenizer, forced, " to=user<|message|>Sure.")
    assert not accepts(tokenizer, tool_grammar(tokenizer, MuseGlimmerFormat(), parallel=False),
                       " to=get_weather" + call + "<|eom|><|start|>assistant" + ping)
    auto = tool_grammar(tokenizer, MuseGlimmerFormat(), forced=False)
    assert accepts(tokenizer, auto, " to=user<|message|>No call needed.")
    assert accepts(tokenizer, auto, " to=self<|message|>Hmm.<|eom|><|start|>assistant to=user<|message|>Let me see."
                                    "<|eom|><|start|>assistant to=get_weather" + call)
    assert accepts(tokenizer, auto, " to=get_weather" + call)
    assert not accepts(tokenizer, auto, "Sure.")  # no recipient
    fmt = MuseGlimmerFormat().bind(FUNCTIONS)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    answer = ToolPlan([], None, fmt, FUNCTIONS).grammar(None, schema)
    assert accepts(tokenizer, answer, ' to=user<|message|>{"x": 1}')
    assert accepts(tokenizer, answer, " to=get_weather" + call)
