"""Reasoning text: which markers delimit a model's thinking, how a request wants it returned, and
the thinking budget the executor enforces.

Two families of templates: gpt-oss's Harmony channels (``<|channel|>analysis<|message|>...
<|end|>``, read by frontend.structured.harmony) and everything else, whose thinking is
``<think>...</think>`` (DeepSeek R1, Qwen3, and any model a grammar makes write the tags).

``deepseek`` extracts ``<think>...</think>`` for any model, whatever its template (a grammar
can force the tags, and base models write them too); ``deepseek-legacy`` also keeps the tags and
text in ``content`` while streaming reasoning_content (llama-server's meaning); ``none`` leaves
everything in ``content``; ``auto`` (the default) follows the template's family. A Harmony
template always speaks in channels, so every format but ``none`` extracts its analysis channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from frontend.http.errors import invalid
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import ReasoningBudget

THINK_START = "<think>"
THINK_END = "</think>"
HARMONY_START = "<|channel|>analysis<|message|>"
HARMONY_END = "<|end|>"
FORMATS = ("none", "deepseek", "deepseek-legacy", "auto")


@dataclass(frozen=True, slots=True)
class Reasoning:
    start: str
    end: str
    starts_open: bool  # the prompt already opened the thinking (the template wrote the start tag)
    keep_in_content: bool = False  # deepseek-legacy


def is_harmony(template: str) -> bool:
    """gpt-oss's channel format (llama.cpp's test, too)."""
    return "<|channel|>" in template


def thinking_tags(template: str) -> tuple[str, str]:
    """The text opening and closing the thinking of models with this template."""
    return (HARMONY_START, HARMONY_END) if is_harmony(template) else (THINK_START, THINK_END)


def reasoning_for(fmt: str, prompt: str, template: str = "", in_reasoning: bool = False) -> Reasoning | None:
    """How to read reasoning from a reply to ``prompt`` with format ``fmt`` (None: don't);
    `in_reasoning`: the prompt continues a message's reasoning (frontend.text.continuation)."""
    if fmt == "none":
        return None
    start, end = thinking_tags(template)
    # A template that opens the thinking itself (DeepSeek R1, Qwen3 thinking) ends the prompt with it.
    starts_open = in_reasoning or prompt.rstrip().endswith(start)
    legacy = fmt == "deepseek-legacy" and not is_harmony(template)
    return Reasoning(start, end, starts_open, keep_in_content=legacy)


def check_budget(value: int, param: str) -> int:
    if value < -1:
        raise invalid(f"{param} must be -1 (no limit) or a number of tokens, got {value}", param=param)
    return value


def budget_for(tokens: int, message: str, template: str, prompt: str, tokenizer: Tokenizer,
               in_reasoning: bool = False) -> ReasoningBudget | None:
    """The engine's budget spec: after ``tokens`` thinking tokens, force ``message`` and the
    closing tag (None when unlimited)."""
    if tokens < 0:
        return None
    start, end = thinking_tags(template)
    forced = tokenizer.tokenize(message + end, add_special=False, parse_special=True)
    return ReasoningBudget(tokens, start, end, forced, open=in_reasoning or prompt.rstrip().endswith(start))
