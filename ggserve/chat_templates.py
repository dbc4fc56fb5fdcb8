"""Built-in chat templates (``--chat-template NAME``), and the pick for a GGUF without one.

The formats are llama.cpp's built-ins of the same names (src/llama-chat.cpp), written as Jinja
so they run through the same renderer as a GGUF's own template. A GGUF without
``tokenizer.chat_template`` gets the format its vocabulary's special tokens belong to (a Gemma
vocabulary has ``<start_of_turn>``), and ChatML only when none matches.
"""

from __future__ import annotations

from collections.abc import Callable

CHATML = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)

# Gemma has no system role: the system text opens the first user turn.
GEMMA = (
    "{{- bos_token -}}\n"
    "{%- if messages and messages[0].role == 'system' -%}\n"
    "  {%- set prefix = messages[0].content + '\\n\\n' -%}{%- set turns = messages[1:] -%}\n"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}\n"
    "{%- for message in turns -%}\n"
    "  {%- set role = 'model' if message.role == 'assistant' else message.role -%}\n"
    "  {{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + message.content | trim"
    " + '<end_of_turn>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)

LLAMA3 = (
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "  {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + message.content | trim"
    " + '<|eot_id|>' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

MISTRAL_V7 = (
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.role == 'system' -%}{{- '[SYSTEM_PROMPT] ' + message.content + '[/SYSTEM_PROMPT]' -}}\n"
    "  {%- elif message.role == 'user' -%}{{- '[INST] ' + message.content + '[/INST]' -}}\n"
    "  {%- else -%}{{- ' ' + message.content + eos_token -}}{%- endif -%}\n"
    "{%- endfor -%}"
)

PHI4 = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '<|im_sep|>' + message.content + '<|im_end|>' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant<|im_sep|>' -}}{%- endif -%}"
)

DEEPSEEK3 = (
    "{{- bos_token -}}\n"
    "{%- for message in messages -%}\n"
    "  {%- if message.role == 'system' -%}{{- message.content + '\\n\\n' -}}\n"
    "  {%- elif message.role == 'user' -%}{{- '<\uff5cUser\uff5c>' + message.content -}}\n"
    "  {%- else -%}{{- '<\uff5cAssistant\uff5c>' + message.content + '<\uff5cend\u2581of\u2581sentence\uff5c>' -}}"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<\uff5cAssistant\uff5c>' -}}{%- endif -%}"
)

BUILTIN = {
    "chatml": CHATML,
    "qwen": CHATML,  # Qwen 2, 2.5 and 3 chat in ChatML
    "gemma": GEMMA,
    "llama3": LLAMA3,
    "mistral-v7": MISTRAL_V7,
    "phi4": PHI4,
    "deepseek3": DEEPSEEK3,
}

# A vocabulary's special token -> the format it belongs to, most specific first.
_BY_SPECIAL_TOKEN = (
    ("<start_of_turn>", "gemma"),
    ("<|start_header_id|>", "llama3"),
    ("<|im_sep|>", "phi4"),
    ("[SYSTEM_PROMPT]", "mistral-v7"),
    ("<\uff5cAssistant\uff5c>", "deepseek3"),
    ("<|im_start|>", "chatml"),
)


def builtin_names() -> list[str]:
    return sorted(BUILTIN)


def guess_from_vocabulary(has_special_token: Callable[[str], bool]) -> str:
    """The built-in whose turn markers the vocabulary has as special tokens; ChatML if none.

    ``has_special_token(text)`` says whether ``text`` is one special token of the vocabulary.
    """
    for token, name in _BY_SPECIAL_TOKEN:
        if has_special_token(token):
            return name
    return "chatml"
