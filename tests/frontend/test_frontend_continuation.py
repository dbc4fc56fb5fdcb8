"""Continuing the final assistant message (frontend/text/continuation.py): which part is
continued, and the prompt laid out as llama-server's common/chat.cpp lays it out, on a template
without thinking tags, one that writes them (Qwen3's way) and one that opens the thinking itself
(DeepSeek R1's way). End to end through the model: test_api_native.py."""

from __future__ import annotations

import msgspec
import pytest

from frontend.api.schemas import ChatCompletionRequest
from frontend.http.errors import ApiError
from frontend.text.continuation import Continued, continuation_mode, continue_message

PLAIN = "{% for m in messages %}<turn>{{ m.content }}{% endfor %}"
QWEN3_LIKE = "{% for m in messages %}<|im_start|>{{ m.content }}{% if m.reasoning_content %}<think>{% endif %}"
TURNS = "<|im_start|>user\nHi<|im_end|>\n"


def request(last: dict, **fields) -> ChatCompletionRequest:
    body = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", **last}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


@pytest.mark.parametrize("last, fields, mode", [
    ({"content": "The answer"}, {}, "content"),
    ({"content": "", "reasoning_content": "Let me see"}, {}, "reasoning_content"),
    ({"content": "The answer", "reasoning_content": "Let me see"}, {}, "content"),
    ({"content": "", "reasoning_content": "Let me see"},
     {"continue_final_message": True, "add_generation_prompt": False}, "reasoning_content"),
    ({"content": "The answer", "reasoning_content": "Let me see"},
     {"continue_final_message": "reasoning_content", "add_generation_prompt": False}, "reasoning_content"),
    ({"content": "", "reasoning_content": "Let me see"},
     {"continue_final_message": "content", "add_generation_prompt": False}, "content"),
    ({"content": "The answer"}, {"continue_final_message": False}, None),
])
def test_what_is_continued(last, fields, mode):
    assert continuation_mode(request(last, **fields)) == mode


def test_without_prefill_assistant_only_an_explicit_request_continues():
    assert continuation_mode(request({"content": "The answer"}), prefill=False) is None
    explicit = request({"content": "The answer"}, continue_final_message=True, add_generation_prompt=False)
    assert continuation_mode(explicit, prefill=False) == "content"


@pytest.mark.parametrize("last, fields", [
    ({"content": "x"}, {"continue_final_message": "reasoning_content"}),  # add_generation_prompt defaults to true
    ({"content": "x", "tool_calls": [{"function": {"name": "f"}}]}, {}),
])
def test_contradictions_are_400s(last, fields):
    with pytest.raises(ApiError) as error:
        continuation_mode(request(last, **fields))
    assert error.value.status == 400


def test_a_template_without_thinking_tags_continues_the_content_alone():
    message = ("The answer", "Let me see")
    assert continue_message(TURNS, *message, "content", PLAIN) == Continued(TURNS + "The answer", False)
    # llama-server would drop the reasoning: it goes where ggserve reads thinking from any model
    assert continue_message(TURNS, *message, "reasoning_content", PLAIN) == Continued(TURNS + "<think>Let me see", True)


@pytest.mark.parametrize("generation_prompt", ["<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n"])
def test_a_reasoning_template_gets_the_thinking_then_the_content(generation_prompt):
    prompt = TURNS + generation_prompt
    message = ("The answer", "Let me see")
    head = TURNS + "<|im_start|>assistant\n"  # the template's own opening tag is replaced
    assert continue_message(prompt, *message, "reasoning_content", QWEN3_LIKE) == Continued(
        head + "<think>Let me see", True)
    assert continue_message(prompt, *message, "content", QWEN3_LIKE) == Continued(
        head + "<think>Let me see</think>The answer", False)


def test_a_harmony_template_continues_the_reasoning_in_the_analysis_channel():
    harmony = "{% for m in messages %}<|start|>{{ m.role }}<|channel|>analysis<|message|>{{ m.thinking }}{% endfor %}"
    prompt = "<|start|>user<|message|>Hi<|end|><|start|>assistant"
    assert continue_message(prompt, "It is", "Let me see", "content", harmony) == Continued(prompt + "It is", False)
    assert continue_message(prompt, "", "Let me see", "reasoning_content", harmony) == Continued(
        prompt + "<|channel|>analysis<|message|>Let me see", True)
