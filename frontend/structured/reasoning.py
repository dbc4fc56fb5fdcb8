"""Reasoning text: which markers delimit a model's thinking, and how a request wants it returned.

``deepseek`` extracts ``<think>...</think>`` for any model, whatever its template (a grammar
can force the tags, and base models write them too); ``deepseek-legacy`` also keeps the tags and
text in ``content`` while streaming reasoning_content (llama-server's meaning); ``none`` leaves
everything in ``content``; ``auto`` (the default) follows the template: ``<think>`` tags when the
template knows them, and always the deepseek tags otherwise, since extracting costs nothing when
the model writes none.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"
FORMATS = ("none", "deepseek", "deepseek-legacy", "auto")


@dataclass(frozen=True, slots=True)
class Reasoning:
    start: str
    end: str
    starts_open: bool  # the prompt already opened the thinking (the template wrote the start tag)
    keep_in_content: bool = False  # deepseek-legacy


def reasoning_for(fmt: str, prompt: str) -> Reasoning | None:
    """How to read reasoning from a reply to ``prompt`` with format ``fmt`` (None: don't)."""
    if fmt == "none":
        return None
    # A template that opens the thinking itself (DeepSeek R1, Qwen3 thinking) ends the prompt with it.
    starts_open = prompt.rstrip().endswith(THINK_START)
    return Reasoning(THINK_START, THINK_END, starts_open, keep_in_content=fmt == "deepseek-legacy")
