"""Continuing the final assistant message (assistant prefill), with llama-server's rules.

A conversation that ends with an assistant message is continued: the model writes on from that
text, and the response holds only what it added. ``continue_final_message`` (``true``,
``"content"``) asks for it explicitly and then needs ``add_generation_prompt: false``, as in
llama-server and vLLM; ``false`` turns the automatic prefill off (the assistant turn is closed and
a new one opens).
"""

from __future__ import annotations

from frontend.http.errors import invalid
from frontend.api.schemas import ChatCompletionRequest


def continues_final_message(body: ChatCompletionRequest) -> bool:
    """Whether the last message is to be continued; a 400 for contradictory settings."""
    explicit = body.continue_final_message
    if explicit == "reasoning_content":
        raise invalid("continuing reasoning_content is not supported; continue the content",
                      param="continue_final_message")
    last = body.messages[-1] if body.messages else None
    if explicit is None:
        if last is None or last.role != "assistant":
            return False
        if len(body.messages) >= 2 and body.messages[-2].role == "assistant":
            raise invalid("cannot have 2 or more assistant messages at the end of the list", param="messages")
        on = True  # llama-server's automatic prefill (add_generation_prompt does not apply)
    else:
        on = explicit is True or explicit == "content"
        if on and (body.add_generation_prompt is None or body.add_generation_prompt):
            raise invalid("cannot set both add_generation_prompt and continue_final_message to true",
                          param="continue_final_message")
    if not on:
        return False
    if last is None or last.role != "assistant":
        raise invalid("continue_final_message needs an assistant message at the end", param="continue_final_message")
    if last.tool_calls:
        raise invalid("cannot continue an assistant message that contains tool calls", param="messages")
    return True
