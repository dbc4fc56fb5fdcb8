"""Chat templates: render a conversation into the prompt text the model was trained on.

The template is the file given with ``--chat-template-file``, a built-in named with
``--chat-template``, or the GGUF's ``tokenizer.chat_template`` (Jinja, as on Hugging Face); a model
without one gets the built-in format its vocabulary's special tokens belong to (ChatML if none),
and the log says which was chosen.
Templates come from model files, so they run in jinja2's immutable sandbox with the helpers HF
templates expect: ``raise_exception``, ``strftime_now``, a ``tojson`` that keeps non-ASCII text, and
``{% generation %}`` blocks (rendered as they are).

Rendering adapts the conversation as llama.cpp does before it applies a template, so prompts are
llama-server's: what the template reads is found once by rendering probes (``caps``, also
/props' ``chat_template_caps``); ``developer`` turns are ``system`` ones (not for gpt-oss's
template, which has both); a system turn the template cannot show is merged into the next turn;
a content given as parts reaches the template as parts where it reads them, else as their text
joined by new lines. The variables start from today's date (``datetime``, ``date_string``), the
tools as JSON text in ``functions`` (FireFunction v2's template lists them from there, as
llama.cpp's FireFunction handler gave them) and ``enable_thinking`` true (llama-server's default
for templates that think); the request's and the server's template kwargs win.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from frontend.structured.reasoning import is_harmony
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
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys,
                      default=_listed)


def _listed(value: Any) -> list[Any]:
    """What ``tojson`` writes of a value JSON has no type for: a ``map`` or ``select`` result is its items."""
    if isinstance(value, Iterator):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _GenerationBlocks(jinja2.ext.Extension):
    """HF's ``{% generation %}...{% endgeneration %}``, which marks the assistant's tokens for
    training: its body renders as it is."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        return nodes.Scope(parser.parse_statements(("name:endgeneration",), drop_needle=True), lineno=lineno)


def _environment() -> ImmutableSandboxedEnvironment:
    # Same options as transformers' apply_chat_template, so HF templates render identically.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols", _GenerationBlocks])
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
        """The prompt of ``messages`` (adapted as the module docstring says); ``extra``: more
        variables (template kwargs), over the defaults."""
        return self._render(self._adapted(messages), add_generation_prompt, tools,
                            {"enable_thinking": True, **(extra or {})})

    @functools.cached_property
    def caps(self) -> dict[str, bool]:
        """What the template renders, found by rendering probes (llama.cpp's template caps)."""
        user = {"role": "user", "content": "u"}
        calls = {"role": "assistant", "content": None, "tool_calls": [_CALL]}

        def probe(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
            try:
                return self._render(messages, False, tools, {})
            except ChatTemplateError:
                return ""

        typed = probe([{"role": "user", "content": [{"type": "text", "text": _PROBE}]}])
        return {
            "supports_string_content": _PROBE in probe([{"role": "user", "content": _PROBE}]),
            # a template that prints the parts list as it is shows the text too, inside "{'type': ..."
            "supports_typed_content": _PROBE in typed and "'type'" not in typed,
            "supports_system_role": _PROBE in probe([{"role": "system", "content": _PROBE}, user]),
            "supports_tools": f"{_PROBE}_tool" in probe([user], [_TOOL]),
            "supports_tool_calls": f"{_PROBE}_fn" in probe([user, calls]),
            "supports_parallel_tool_calls": f"{_PROBE}_fn2" in probe([user, {**calls, "tool_calls": [_CALL, _CALL_2]}]),
            "supports_tool_call_id": "call_probe_1" in probe(
                [user, calls, {"role": "tool", "tool_call_id": "call_probe_1", "content": "ok"}]),
        }

    def _adapted(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caps = self.caps
        typed, string = caps["supports_typed_content"], caps["supports_string_content"]
        keep_developer = is_harmony(self.source)  # gpt-oss's template has both roles
        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list) and not typed:
                m = m | {"content": content_text(content)}
            elif isinstance(content, str) and typed and not string:
                m = m | {"content": [{"type": "text", "text": content}]}
            if m.get("role") == "developer" and not keep_developer:
                m = m | {"role": "system"}
            out.append(m)
        if out and out[0].get("role") == "system" and not caps["supports_system_role"]:
            system = content_text(out.pop(0).get("content"))
            if out:
                out[0] = out[0] | {"content": f"{system}\n{content_text(out[0].get('content'))}"}
        return out

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                tools: list[dict[str, Any]] | None, variables: dict[str, Any]) -> str:
        now = datetime.datetime.now()
        variables = {"datetime": now.strftime("%b %d %Y"), "date_string": now.strftime("%d %b %Y"),
                     "functions": json.dumps(tools, ensure_ascii=False, indent=2) if tools else "", **variables,
                     "messages": messages, "add_generation_prompt": add_generation_prompt,
                     "bos_token": self.bos_token, "eos_token": self.eos_token}
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


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's content as text: its text parts joined by new lines (llama.cpp's join)."""
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


_PROBE = "ggserve-probe"
_CALL = {"id": "call_probe_1", "type": "function", "function": {"name": f"{_PROBE}_fn", "arguments": "{}"}}
_CALL_2 = {"id": "call_probe_2", "type": "function", "function": {"name": f"{_PROBE}_fn2", "arguments": "{}"}}
_TOOL = {"type": "function", "function": {"name": f"{_PROBE}_tool", "description": "probe",
                                          "parameters": {"type": "object", "properties": {}}}}


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
