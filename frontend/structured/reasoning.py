"""Reasoning text: which markers delimit a model's thinking, how a request wants it returned, and
the thinking budget the executor enforces.

Thirteen families of templates: gpt-oss's Harmony channels (``<|channel|>analysis<|message|>...
<|end|>``, read by frontend.structured.harmony), Mistral's ``[THINK]...[/THINK]`` (Magistral,
Ministral 3 reasoning), Seed-OSS's ``<seed:think>...</seed:think>``, Command R7B's and Cohere2
MoE's ``<|START_THINKING|>...<|END_THINKING|>``, Apertus's deliberation (``<|inner_prefix|>...
<|inner_suffix|>``), MiniMax M3's ``<mm:think>...</mm:think>``, Kimi K3's think section
(``<|open|>think<|sep|>...<|close|>think<|sep|>``), Tencent Hy3's ``<think:opensource>...
</think:opensource>``, Gemma 4's thought channel (``<|channel>thought\n...<channel|>``: the tag is
``<|channel>thought``, since a budget of 0 closes the thinking before the new line, and the white
space after it is not reasoning, as llama.cpp reads it), Apriel 1.6's steps (its prompt ends with
``Here are my reasoning steps:``, the answer follows ``[BEGIN FINAL RESPONSE]``), Solar Open's
thinking message (``<|think|>...<|end|>``, the next message's framing dropped by its tool format),
Muse Glimmer's message to itself (`` to=self<|message|>...<|eom|>``) and everything else, whose
thinking is ``<think>...</think>`` (DeepSeek R1, Qwen3, MiniMax M2, and any model a grammar makes
write the tags).

``deepseek`` extracts ``<think>...</think>`` for any model, whatever its template (a grammar
can force the tags, and base models write them too); ``deepseek-legacy`` also keeps the tags and
text in ``content`` while streaming reasoning_content (llama-server's meaning); ``none`` leaves
everything in ``content``; ``auto`` (the default) follows the template's family. A Harmony
template always speaks in channels, so every format but ``none`` extracts its analysis channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from frontend.api.schemas import TextCompletionFields
from frontend.structured import gbnf
from frontend.structured.tool_formats.xml_args.glm import HY3_SUFFIX, is_hy3
from frontend.structured.tool_formats.xml_args.kimi_k3 import THINK_END as KIMI_K3_END, \
    THINK_START as KIMI_K3_START, is_kimi_k3
from frontend.http.errors import invalid
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import ReasoningBudget, SamplingParams

THINK_START = "<think>"
THINK_END = "</think>"
MISTRAL_THINK_START = "[THINK]"
MISTRAL_THINK_END = "[/THINK]"
HARMONY_START = "<|channel|>analysis<|message|>"
HARMONY_END = "<|end|>"
SEED_THINK_START = "<seed:think>"
SEED_THINK_END = "</seed:think>"
GEMMA4_START = "<|channel>thought"
GEMMA4_END = "<channel|>"
COHERE_THINK_START = "<|START_THINKING|>"
COHERE_THINK_END = "<|END_THINKING|>"
APERTUS_START = "<|inner_prefix|>"
APERTUS_END = "<|inner_suffix|>"
MINIMAX_M3_START = "<mm:think>"
MINIMAX_M3_END = "</mm:think>"
APRIEL_START = "Here are my reasoning steps:"
APRIEL_END = "[BEGIN FINAL RESPONSE]"
SOLAR_THINK_START = "<|think|>"
SOLAR_THINK_END = "<|end|>"
MUSE_THINK_START = " to=self<|message|>"
MUSE_THINK_END = "<|eom|>"
FORMATS = ("none", "deepseek", "deepseek-legacy", "auto")


@dataclass(frozen=True, slots=True)
class Reasoning:
    start: str
    end: str
    starts_open: bool  # the prompt already opened the thinking (the template wrote the start tag)
    keep_in_content: bool = False  # deepseek-legacy
    skip_space: bool = False  # white space after the start tag is not reasoning (Gemma 4's new line)


def is_harmony(template: str) -> bool:
    """gpt-oss's channel format (llama.cpp's test, too)."""
    return "<|channel|>" in template


def thinking_tags(template: str) -> tuple[str, str]:
    """The text opening and closing the thinking of models with this template."""
    if is_harmony(template):
        return HARMONY_START, HARMONY_END
    if "<|channel>" in template:  # Gemma 4 (not Harmony's "<|channel|>")
        return GEMMA4_START, GEMMA4_END
    if SEED_THINK_START in template:
        return SEED_THINK_START, SEED_THINK_END
    if COHERE_THINK_START in template:
        return COHERE_THINK_START, COHERE_THINK_END
    if APERTUS_START in template:
        return APERTUS_START, APERTUS_END
    if MINIMAX_M3_START in template:
        return MINIMAX_M3_START, MINIMAX_M3_END
    if is_kimi_k3(template):
        return KIMI_K3_START, KIMI_K3_END
    if is_hy3(template):
        return f"<think{HY3_SUFFIX}>", f"</think{HY3_SUFFIX}>"
    if APRIEL_START in template and APRIEL_END in template:
        return APRIEL_START, APRIEL_END
    if SOLAR_THINK_START in template and "<|begin|>assistant" in template:  # Solar Open
        return SOLAR_THINK_START, SOLAR_THINK_END
    if "assistant" + MUSE_THINK_START in template:  # Muse Glimmer
        return MUSE_THINK_START, MUSE_THINK_END
    return (MISTRAL_THINK_START, MISTRAL_THINK_END) if MISTRAL_THINK_END in template else (THINK_START, THINK_END)


def reasoning_for(fmt: str, prompt: str, template: str = "", in_reasoning: bool = False) -> Reasoning | None:
    """How to read reasoning from a reply to ``prompt`` with format ``fmt`` (None: don't);
    `in_reasoning`: the prompt continues a message's reasoning (frontend.text.continuation)."""
    if fmt == "none":
        return None
    start, end = thinking_tags(template)
    # A template that opens the thinking itself (DeepSeek R1, Qwen3 thinking) ends the prompt with it.
    starts_open = in_reasoning or prompt.rstrip().endswith(start)
    legacy = fmt == "deepseek-legacy" and not is_harmony(template)
    return Reasoning(start, end, starts_open, keep_in_content=legacy, skip_space=start == GEMMA4_START)


def opened_thinking(fmt: str, prompt: str, template: str, in_reasoning: bool = False) -> str:
    """What a reply that keeps its thinking in ``content`` (``none``, ``deepseek-legacy``) begins
    with: the thinking tag the template opened at the end of the prompt, and the white space after
    it (``"<think>\\n"``), as llama-server shows it; "" otherwise (a continued message's reasoning
    is the client's own text)."""
    if fmt not in ("none", "deepseek-legacy") or in_reasoning or is_harmony(template):
        return ""
    start = thinking_tags(template)[0]
    body = prompt.rstrip()
    return prompt[len(body) - len(start):] if body.endswith(start) else ""


def thinking_first(rules: gbnf.Rules, value: str, reasoning: Reasoning, opens: tuple[str, ...] = ()) -> str:
    """A reply whose answer ``value`` comes after the thinking of a template that thinks in
    tags: the thinking a prompt opened must close first, one it did not open may come first. A
    grammar that forced the answer from the first token would put it inside the thinking.
    ``opens``: the tool format's call openers, kept out of the thinking (the reply's parser reads
    one there as the end of the thinking and the start of a call)."""
    text = gbnf.text_without(rules, (reasoning.end, *opens), "thinking-text")
    thinking = f'{text} {gbnf.literal(reasoning.end)} [ \\t\\n]*'
    return f"{thinking} {value}" if reasoning.starts_open else f"({gbnf.literal(reasoning.start)} {thinking})? {value}"


def check_budget(value: int, param: str) -> int:
    if value < -1:
        raise invalid(f"{param} must be -1 (no limit) or a number of tokens, got {value}", param=param)
    return value


def budget_for(tokens: int, message: str, template: str, prompt: str, tokenizer: Tokenizer,
               in_reasoning: bool = False, control: bool = False, enders: tuple[str, ...] = ()
               ) -> ReasoningBudget | None:
    """A chat completion's budget spec, on its template's tags: after ``tokens`` thinking tokens,
    force ``message`` and the closing tag (None when unlimited and not under ``control``).
    ``enders``: the tool format's call openers, which end the thinking too (the reply's parser
    reads a call there)."""
    start, end = thinking_tags(template)
    return _budget(tokens, message, start, [end, *enders], in_reasoning or prompt.rstrip().endswith(start),
                   tokenizer, control)


def tagged_budget(body: TextCompletionFields, tokenizer: Tokenizer) -> ReasoningBudget | None:
    """A text completion's budget spec, on the tags the request names (llama-server's
    ``reasoning_budget_start_tag`` and ``reasoning_budget_end_tags``); None without a budget or
    reasoning control. Whether the prompt opened the thinking is each prompt's own (with_tagged_budget)."""
    tokens = -1 if body.reasoning_budget_tokens is None else check_budget(body.reasoning_budget_tokens,
                                                                         "reasoning_budget_tokens")
    if tokens < 0 and not body.reasoning_control:
        return None
    ends = body.reasoning_budget_end_tags
    if ends is None:
        ends = [body.reasoning_budget_end_tag] if body.reasoning_budget_end_tag else []
    ends = [tag for tag in ends if tag]
    if not body.reasoning_budget_start_tag or not ends:
        raise invalid("a reasoning budget on a text completion needs its tags: reasoning_budget_start_tag and "
                      "reasoning_budget_end_tags", param="reasoning_budget_tokens" if tokens >= 0 else "reasoning_control")
    return _budget(tokens, body.reasoning_budget_message or "", body.reasoning_budget_start_tag, ends, False,
                   tokenizer, body.reasoning_control)


def with_tagged_budget(sampling: SamplingParams, budget: ReasoningBudget | None,
                       prompts: list[str]) -> SamplingParams | list[SamplingParams]:
    """The sampling of each prompt: with ``budget``, open where the prompt opened the thinking."""
    if budget is None:
        return sampling
    opened = msgspec.structs.replace(budget, open=True)
    return [msgspec.structs.replace(sampling, reasoning_budget=opened if prompt.rstrip().endswith(budget.start)
                                    else budget) for prompt in prompts]


def _budget(tokens: int, message: str, start: str, ends: list[str], open: bool, tokenizer: Tokenizer,
            control: bool) -> ReasoningBudget | None:
    if tokens < 0 and not control:
        return None
    forced = tokenizer.tokenize(message + ends[0], add_special=False, parse_special=True)
    return ReasoningBudget(tokens, start, ends, forced, open=open, control=control)
