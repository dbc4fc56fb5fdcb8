"""Chat templates: render a conversation into the prompt text the model was trained on.

The template is the file given with ``--chat-template-file``, a built-in named with
``--chat-template``, or the GGUF's ``tokenizer.chat_template`` (Jinja, as on Hugging Face); a model
without one gets the built-in format its vocabulary's special tokens belong to (ChatML if none),
and the log says which was chosen.
Templates come from model files, so they run in jinja2's immutable sandbox with the helpers HF
templates expect: ``raise_exception``, ``strftime_now`` and a ``tojson`` that keeps non-ASCII text.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ggserve.chat_templates import BUILTIN, guess_from_vocabulary
from frontend.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)

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
                 strip_bos: bool = False, strip_eos: bool = False, origin: str = "") -> None:
        """``strip_bos``/``strip_eos``: the tokenizer adds BOS/EOS itself, so a template that writes
        them would double them; they are cut from the rendered text (as llama.cpp does).
        ``origin`` says where the template came from (for the log and /props)."""
        self.source = source
        self.origin = origin
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


def load_chat_template(tokenizer: Tokenizer, template_file: str = "", builtin: str = "") -> ChatTemplate:
    """The template to use: ``template_file``, else the built-in ``builtin``, else the model's,
    else the built-in its vocabulary suggests."""
    if template_file:
        with open(template_file, encoding="utf-8") as f:
            source, origin = f.read(), f"file {template_file}"
    elif builtin:
        source, origin = BUILTIN[builtin], f"built-in {builtin} (--chat-template)"
    elif (own := tokenizer.metadata("tokenizer.chat_template")) is not None:
        source, origin = own, "the model's tokenizer.chat_template"
    else:
        name = guess_from_vocabulary(lambda text: _is_special_token(tokenizer, text))
        source, origin = BUILTIN[name], f"built-in {name}, chosen from the vocabulary (the model has no template)"
    log.info("chat template: %s", origin)
    return ChatTemplate(
        source,
        bos_token=tokenizer.special_text(tokenizer.bos_id),
        eos_token=tokenizer.special_text(tokenizer.eos_id),
        strip_bos=tokenizer.add_bos,
        strip_eos=tokenizer.add_eos,
        origin=origin,
    )


def _is_special_token(tokenizer: Tokenizer, text: str) -> bool:
    """``text`` is one token when special tokens are parsed, and several as plain text."""
    return (len(tokenizer.tokenize(text, add_special=False, parse_special=True)) == 1
            and len(tokenizer.tokenize(text, add_special=False, parse_special=False)) > 1)
