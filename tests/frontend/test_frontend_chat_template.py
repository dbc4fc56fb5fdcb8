"""Chat templates: the pick for a GGUF without one (Gemma's format for the test GGUF, from its
vocabulary), the built-ins, an HF template from a file, the helpers HF templates use, the sandbox,
and the conversation adapted to what the template reads, as llama.cpp adapts it."""

from __future__ import annotations

import datetime
import json
import logging

import pytest

from ggserve.chat_templates import BUILTIN, CHATML, GEMMA, builtin_names, guess_from_vocabulary
from frontend.text.chat_template import ChatTemplate, ChatTemplateError, load_chat_template
from frontend.text.tokenizer import Tokenizer

# google/gemma-3-270m-it's template (Hugging Face), as a --chat-template-file would hold it.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Capital of France?"},
]


def test_model_without_template_gets_the_format_of_its_vocabulary(tokenizer: Tokenizer, caplog):
    # The embedded Gemma 3 GGUF has no template but Gemma's turn tokens: Gemma's format, not ChatML.
    with caplog.at_level(logging.INFO, logger="frontend.text.chat_template"):
        template = load_chat_template(tokenizer)
    assert template.source == GEMMA
    assert "built-in gemma, chosen from the vocabulary" in caplog.text
    assert template.render(CONVERSATION[:2]) == (
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
    )
    assert not template.render(CONVERSATION[:2], add_generation_prompt=False).endswith("model\n")


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_templates_render(tokenizer: Tokenizer, name: str):
    template = load_chat_template(tokenizer, builtin=name)
    assert template.source == BUILTIN[name]
    text = template.render(CONVERSATION)
    assert "Be brief." in text and "Hi!" in text
    assert template.render(CONVERSATION[:2], add_generation_prompt=True) != template.render(
        CONVERSATION[:2], add_generation_prompt=False) or name == "mistral-v7"  # v7 has no generation prompt


def test_vocabulary_guess_falls_back_to_chatml():
    assert guess_from_vocabulary(lambda text: False) == "chatml"
    assert guess_from_vocabulary(lambda text: text == "<|start_header_id|>") == "llama3"


def test_template_file_overrides_and_bos_is_not_doubled(tokenizer: Tokenizer, tmp_path):
    path = tmp_path / "gemma3.jinja"
    path.write_text(GEMMA3_TEMPLATE)
    template = load_chat_template(tokenizer, str(path))
    text = template.render(CONVERSATION)
    # The tokenizer adds BOS itself, so the template's leading <bos> is cut.
    assert text == (
        "<start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nCapital of France?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    ids = tokenizer.tokenize(text, add_special=True, parse_special=True)
    assert ids.count(tokenizer.bos_id) == 1
    assert ids.count(tokenizer.tokenize("<start_of_turn>", False, True)[0]) == 4


def test_raise_exception_reaches_the_caller():
    template = ChatTemplate(GEMMA3_TEMPLATE, "<bos>", "<eos>")
    with pytest.raises(ChatTemplateError, match="must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_hf_helpers_strftime_now_and_tojson():
    source = "{{ strftime_now('%Y') }}|{{ tools | tojson }}|{{ extra_flag }}"
    template = ChatTemplate(source, "", "")
    tools = [{"name": "météo", "parameters": {}}]
    text = template.render([], tools=tools, extra={"extra_flag": True})
    assert text == f'{datetime.date.today().year}|[{{"name": "météo", "parameters": {{}}}}]|True'


def test_sandbox_refuses_to_mutate_or_reach_internals():
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages.append(1) }}", "", "").render([])
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}", "", "").render([])


def test_runtime_errors_become_template_errors():
    with pytest.raises(ChatTemplateError, match="chat template failed"):
        ChatTemplate("{{ messages[0]['content'] + 1 }}", "", "").render([{"role": "user", "content": "x"}])


def test_syntax_error_is_reported_at_load():
    with pytest.raises(ValueError, match="does not parse"):
        ChatTemplate("{% for %}", "", "")


# A template in the style of Hermes / Qwen: a system turn, tools, and tool calls with their ids.
TOOL_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}{% endfor %}</tools>{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>"
    "{% if m.content is string %}{{ m.content }}{% elif m.content %}{% for p in m.content %}{{ p.text }}{% endfor %}"
    "{% endif %}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}"
    "{% if m.tool_call_id %}[{{ m.tool_call_id }}]{% endif %}{% endfor %}"
)


def test_template_caps_come_from_rendering_probes() -> None:
    chatml = ChatTemplate(CHATML, "<bos>", "<eos>").caps
    assert chatml["supports_system_role"] and chatml["supports_string_content"]
    assert not chatml["supports_typed_content"]  # it prints the parts list as it is
    assert not (chatml["supports_tools"] or chatml["supports_tool_calls"] or chatml["supports_tool_call_id"])
    tools = ChatTemplate(TOOL_TEMPLATE, "", "").caps
    assert all(tools.values()), tools


PARTS = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]


def test_content_parts_reach_templates_that_read_parts_and_are_joined_for_the_others():
    assert ChatTemplate(TOOL_TEMPLATE, "", "").render([{"role": "user", "content": PARTS}], False) == "<|user|>Helloworld"
    chatml = ChatTemplate(CHATML, "", "").render([{"role": "user", "content": PARTS}], False)
    assert "Hello\nworld" in chatml and "'type'" not in chatml


def test_system_turn_a_template_cannot_show_joins_the_next_turn_and_developer_is_system():
    # gemma-2's template refuses a system turn; llama.cpp merges it into the first user turn
    source = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
              "{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}")
    template = ChatTemplate(source, "", "")
    assert not template.caps["supports_system_role"]
    for role in ("system", "developer"):
        rendered = template.render([{"role": role, "content": "Be brief."}, {"role": "user", "content": "Hi"}], False)
        assert rendered == "<user>Be brief.\nHi"
    assert ChatTemplate(CHATML, "", "").render([{"role": "developer", "content": "x"}], False).startswith(
        "<|im_start|>system")


def test_variables_start_from_the_date_and_thinking_on_and_kwargs_win():
    source = "{{ date_string }}|{{ datetime }}|{{ enable_thinking }}"
    today = datetime.date.today()
    assert ChatTemplate(source, "", "").render([]) == f"{today:%d %b %Y}|{today:%b %d %Y}|True"
    assert ChatTemplate(source, "", "").render([], extra={"enable_thinking": False}).endswith("|False")


def test_firefunction_v2_reads_the_tools_as_json_text_in_functions():
    """As llama.cpp's FireFunction v2 handler gave them: indented JSON, "" without tools; the
    template's probes (which need its date too) render."""
    source = ("{{ messages[0]['content'] }}|{{ '\\nAvailable functions as JSON spec:\\n' + functions + "
              "'\\nToday is ' + datetime }}")
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {}}}]
    template = ChatTemplate(source, "", "")
    text = template.render([{"role": "user", "content": "Hi"}], tools=tools)
    assert text.startswith("Hi|\nAvailable functions as JSON spec:\n" + json.dumps(tools, indent=2, ensure_ascii=False))
    assert "spec:\n\nToday is " in template.render([{"role": "user", "content": "Hi"}])
    assert template.caps["supports_string_content"]


def test_generation_blocks_and_tojson_of_a_filtered_sequence_render():
    source = ("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
              "|{{ messages | map(attribute='role') | tojson }}")
    assert ChatTemplate(source, "", "").render([{"role": "user", "content": "hi"}]) == 'hi|["user"]'
