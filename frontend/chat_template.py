"""Chat templates: render a conversation into the prompt text the model was trained on.

The template is the GGUF's ``tokenizer.chat_template`` (Jinja, as on Hugging Face), or the file
given with ``--chat-template-file``; a model without one gets ChatML, as llama-server does.
Templates come from model files, so they run in jinja2's immutable sandbox with the helpers HF
templates expect: ``raise_exception``, ``strftime_now`` and a ``tojson`` that keeps non-ASCII text.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from frontend.tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}"
)


class ChatTemplateError(ValueError):
    """The template rejected the conversation (raise_exception) or failed while rendering."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    # Same options as transformers' apply_chat_template, so HF templates render identically.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    def __init__(self, source: str, bos_token: str, eos_token: str,
                 strip_bos: bool = False, strip_eos: bool = False) -> None:
        """``strip_bos``/``strip_eos``: the tokenizer adds BOS/EOS itself, so a template that writes
        them would double them; they are cut from the rendered text (as llama.cpp does)."""
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._strip_bos = strip_bos and bool(bos_token)
        self._strip_eos = strip_eos and bool(eos_token)
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"chat template does not parse: {exc} (line {exc.lineno})") from exc

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None) -> str:
        variables: dict[str, Any] = dict(extra or {})
        variables.update(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        if tools:
            variables["tools"] = tools
        try:
            text = self._template.render(variables)
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"chat template failed: {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ChatTemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc
        if self._strip_bos and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        if self._strip_eos and text.endswith(self.eos_token):
            text = text[: -len(self.eos_token)]
        return text


def load_chat_template(tokenizer: Tokenizer, template_file: str = "") -> ChatTemplate:
    """The template to use: ``template_file`` if given, else the model's, else ChatML."""
    if template_file:
        with open(template_file, encoding="utf-8") as f:
            source = f.read()
    else:
        source = tokenizer.metadata("tokenizer.chat_template") or CHATML_TEMPLATE
    return ChatTemplate(
        source,
        bos_token=tokenizer.special_text(tokenizer.bos_id),
        eos_token=tokenizer.special_text(tokenizer.eos_id),
        strip_bos=tokenizer.add_bos,
        strip_eos=tokenizer.add_eos,
    )
