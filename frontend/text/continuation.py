"""Continuing the final assistant message (assistant prefill), with llama-server's rules.

A conversation that ends with an assistant message is continued: the model writes on from that
message, and the response holds only what it added. ``continue_final_message`` asks for it
explicitly (and then needs ``add_generation_prompt: false``, as in llama-server and vLLM):
``true`` or ``"content"`` continues the content, ``"reasoning_content"`` the reasoning; ``false``
turns the automatic prefill off (the assistant turn is closed and a new one opens). Automatic and
``true`` continue the reasoning when the message has reasoning and no content, as llama-server does.

The prompt is laid out as llama-server lays it out (common/chat.cpp): the turns before the
message with the generation prompt, cut before the thinking tag the template may open it with,
then on a template that reasons (one that writes ``<think>`` tags) the tag, the message's
reasoning, and, continuing the content, the closing tag and the content. A template without
thinking tags has nowhere to put past reasoning: the content alone is continued, and continuing
reasoning opens ``<think>`` (the tags ggserve reads from any model) where llama-server would drop
it. A Harmony template (gpt-oss) continues the content as it is, or the reasoning in an open
analysis channel (its answer lives in another channel, which an empty analysis would not open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frontend.api.schemas import ChatCompletionRequest
from frontend.http.errors import invalid
from frontend.structured.reasoning import is_harmony, thinking_tags

Mode = Literal["content", "reasoning_content"]


@dataclass(frozen=True, slots=True)
class Continued:
    prompt: str
    in_reasoning: bool  # the reply starts inside the thinking (its start tag is in the prompt)


def continuation_mode(body: ChatCompletionRequest, prefill: bool = True) -> Mode | None:
    """What of the last message is continued (None: nothing); a 400 for contradictory settings.
    ``prefill`` False (--no-prefill-assistant): only an explicit ``continue_final_message``
    continues; a final assistant message is otherwise a closed turn."""
    explicit = body.continue_final_message
    last = body.messages[-1] if body.messages else None
    if explicit is None:
        if not prefill or last is None or last.role != "assistant":
            return None
        if len(body.messages) >= 2 and body.messages[-2].role == "assistant":
            raise invalid("cannot have 2 or more assistant messages at the end of the list", param="messages")
    elif explicit is False:
        return None
    elif body.add_generation_prompt is None or body.add_generation_prompt:
        raise invalid("cannot set both add_generation_prompt and continue_final_message to true",
                      param="continue_final_message")
    if last is None or last.role != "assistant":
        raise invalid("continue_final_message needs an assistant message at the end", param="continue_final_message")
    if last.tool_calls:
        raise invalid("cannot continue an assistant message that contains tool calls", param="messages")
    if explicit in ("content", "reasoning_content"):
        return explicit
    return "reasoning_content" if last.reasoning_content and not last.content else "content"


def continue_message(prompt: str, content: str, reasoning: str, mode: Mode, template: str) -> Continued:
    """`prompt` (the turns before the message, with the generation prompt) continued by the
    message's `content` and `reasoning`."""
    start, end = thinking_tags(template)
    if start not in template or is_harmony(template):
        if mode == "content":
            return Continued(prompt + content, False)
        return Continued(prompt + start + reasoning, True)
    opened = prompt.rstrip()
    head = opened[: -len(start)] if opened.endswith(start) else prompt  # the template's own tag goes
    if mode == "reasoning_content":
        return Continued(head + start + reasoning, True)
    return Continued(head + start + reasoning + end + content, False)
