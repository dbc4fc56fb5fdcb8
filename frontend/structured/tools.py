"""Tools on a chat request: the conversation as the template needs it, and the grammar of calls.

A template with a known or learned tool format (``tool_formats.learned.template_format``) gets ``tools`` and the
history as Hugging Face templates expect (call arguments as objects). Any other template,
including none (the embedded Gemma 3 270M), gets the generic format: the tool list and the call
syntax in a system message, past calls written into the assistant text and tool results as user
turns. Either way a grammar makes the output valid: ``required`` and a named function force a call
(its arguments valid against the function's schema) from the first token, or after the thinking
of a template that thinks first; ``auto`` allows free text that may open a call, which the
grammar then completes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from frontend.http.errors import invalid
from frontend.api.schemas import ChatCompletionRequest, ChatMessage, NamedToolChoice, TextPart, Tool
from frontend.structured import gbnf
from frontend.structured.constraints import Frame
from frontend.structured.json_schema import SchemaError, schema_rule
from frontend.structured.tool_formats import GENERIC, ToolFormat
from frontend.structured.tool_formats.learned import template_format
from frontend.text.chat_template import content_text
from frontend.text.multimodal import MARKER

GENERIC_PROMPT = (
    "You can call these functions:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, reply with one <tool_call> block per call:\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n</tool_call>'
)


@dataclass(slots=True)
class ToolPlan:
    messages: list[dict[str, Any]]  # for the chat template
    template_tools: list[dict[str, Any]] | None
    format: ToolFormat | None  # how to read calls from the output (None: no calls expected)
    functions: list[dict[str, Any]] = field(default_factory=list)  # those the model may call
    forced: bool = False  # the grammar makes the answer calls only (tool_choice required or named)
    parallel: bool = True
    reader: ToolFormat | None = None  # without calls expected: how to read the reply's framing (Functionary's)

    def grammar(self, frame: Frame | None = None, answer: Any = None) -> str | None:
        """The grammar of the reply (None: no calls expected). ``frame`` places a forced answer
        in the reply (after the thinking of a template that thinks first). ``answer``: the schema
        of the response format, which a reply that calls nothing follows (OpenAI's and
        Anthropic's reading of tools with a response format); forced calls leave it to the turn
        after the results."""
        if self.format is None:
            return None
        return _grammar(self.format, self.functions, self.forced, self.parallel, frame,
                        None if self.forced else answer)


def plan_tools(body: ChatCompletionRequest, template_source: str) -> ToolPlan:
    tools = [_template_tool(t) for t in body.tools or []]
    choice = body.tool_choice or ("auto" if tools else "none")
    named = choice.function.name if isinstance(choice, NamedToolChoice) else None
    if choice != "none" and not tools:
        raise invalid("tool_choice needs tools", param="tool_choice")
    if named is not None and named not in {t["function"]["name"] for t in tools}:
        raise invalid(f"tool_choice names the function {named!r}, which is not among the tools", param="tool_choice")
    native = template_format(template_source)
    if native is not None:
        native = native.bind([t["function"] for t in tools])
    fmt = native or GENERIC
    history = [_message(m, i) for i, m in enumerate(body.messages)]
    _check_tool_results(history)
    if native is None:
        history = _generic_history(history)
    elif native.reasoning_key:
        history = [m | {native.reasoning_key: m["reasoning_content"]} if "reasoning_content" in m else m
                   for m in history]
    elif native.string_arguments:
        history = [_with_string_arguments(m) if "tool_calls" in m else m for m in history]
    if native is not None and "tool_calls" not in template_source:  # a template that shows no past calls
        history = [_calls_in_text(m, native) if "tool_calls" in m else m for m in history]
    shown = [_with_parameter_descriptions(t) for t in tools] if native and native.described_parameters else tools
    if choice == "none" or not tools:
        return ToolPlan(history, shown or None if native else None, None, reader=native.reader() if native else None)
    if native is None:
        history = _with_system(history, GENERIC_PROMPT.format(
            tools="\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools)))
    functions = [t["function"] for t in tools if named is None or t["function"]["name"] == named]
    return ToolPlan(history, shown if native else None, fmt, functions, forced=choice != "auto",
                    parallel=body.parallel_tool_calls)


def _template_tool(tool: Tool) -> dict[str, Any]:
    """A tool as llama-server gives it to templates: a name, a description ("" if none) and the
    parameters ({} if none); other fields (``strict``) are left out."""
    f = tool.function
    return {"type": "function", "function": {"name": f.name, "description": f.description or "",
                                             "parameters": f.parameters if f.parameters is not None else {}}}


def _with_parameter_descriptions(tool: dict[str, Any]) -> dict[str, Any]:
    """The tool with a description ("") on each parameter that has none."""
    parameters = tool["function"]["parameters"]
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return tool
    described = {k: {"description": ""} | v if isinstance(v, dict) else v for k, v in properties.items()}
    return {**tool, "function": {**tool["function"], "parameters": {**parameters, "properties": described}}}


def _message(message: ChatMessage, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _content(message.content)}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.reasoning_content is not None:
        out["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        if message.role != "assistant":
            raise invalid(f"messages[{i}]: only assistant messages have tool_calls", param=f"messages[{i}].tool_calls")
        calls = []
        for j, call in enumerate(message.tool_calls):
            args: Any = call.function.arguments
            if isinstance(args, str):
                try:
                    args = json.loads(args) if args.strip() else {}
                except json.JSONDecodeError as exc:
                    raise invalid(f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON: {exc}",
                                  param=f"messages[{i}].tool_calls[{j}].function.arguments") from None
            if not isinstance(args, dict):
                raise invalid(f"messages[{i}].tool_calls[{j}].function.arguments must be a JSON object",
                              param=f"messages[{i}].tool_calls[{j}].function.arguments")
            calls.append({"id": call.id or f"call_{i}_{j}", "type": "function",
                          "function": {"name": call.function.name, "arguments": args}})
        out["tool_calls"] = calls
    return out


def _content(content: str | list[Any] | None) -> str | list[dict[str, Any]]:
    """Text parts stay parts (the template reads them as it can: frontend.text.chat_template);
    with media among them, llama.cpp's text: the parts joined by new lines, none next to a media
    marker (an image or audio part: frontend.text.multimodal)."""
    if not isinstance(content, list):
        return content or ""
    if all(isinstance(part, TextPart) for part in content):
        return [{"type": "text", "text": part.text} for part in content]
    text, after_media = "", False
    for part in content:
        if isinstance(part, TextPart):
            text += ("\n" if text and not after_media else "") + part.text
            after_media = False
        else:
            text += MARKER
            after_media = True
    return text


def _with_string_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message whose calls' arguments are JSON text (for templates that concatenate them)."""
    calls = [c | {"function": c["function"] | {"arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
             for c in message["tool_calls"]]
    return message | {"tool_calls": calls}


def _calls_in_text(message: dict[str, Any], fmt: ToolFormat) -> dict[str, Any]:
    """An assistant message whose calls are written after its text, as the model writes them
    (LFM2 templates that leave past calls out); as it is where the format cannot write them."""
    written = fmt.write_calls([(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]])
    if written is None:
        return message
    rest = {k: v for k, v in message.items() if k != "tool_calls"}
    return rest | {"content": content_text(message["content"]) + written}


def _check_tool_results(history: list[dict[str, Any]]) -> None:
    """A tool result must answer a call made earlier in the conversation."""
    ids: set[str] = set()
    for i, m in enumerate(history):
        ids.update(c["id"] for c in m.get("tool_calls", ()))
        if m["role"] == "tool":
            if not ids:
                raise invalid(f"messages[{i}] is a tool result but no assistant message before it calls a tool",
                              param=f"messages[{i}]")
            call_id = m.get("tool_call_id")
            if call_id is not None and call_id not in ids:
                raise invalid(f"messages[{i}].tool_call_id {call_id!r} answers no earlier tool call",
                              param=f"messages[{i}].tool_call_id")


def _generic_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls into the assistant's text, tool results into user turns (consecutive ones merged);
    past reasoning stays for the templates that show it (Seed-OSS, Command A)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in history:
        if m["role"] == "assistant" and m.get("tool_calls"):
            blocks = []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                call = {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                blocks.append(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>")
            text = "\n".join(filter(None, [content_text(m["content"]), *blocks]))
            out.append({"role": "assistant", "content": text,
                        **({"reasoning_content": m["reasoning_content"]} if "reasoning_content" in m else {})})
        elif m["role"] == "tool":
            name = names.get(m.get("tool_call_id", ""), m.get("name", ""))
            result = content_text(m["content"])
            block = f"<tool_response>\n{result}\n</tool_response>"
            if name:
                block = f'<tool_response name="{name}">\n{result}\n</tool_response>'
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content", "name", "reasoning_content")})
    for m in out:
        m.pop("_tool_results", None)
    return out


def _with_system(history: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if history and history[0]["role"] in ("system", "developer"):
        first = dict(history[0], content=f"{content_text(history[0]['content'])}\n\n{text}".strip())
        return [first, *history[1:]]
    return [{"role": "system", "content": text}, *history]


def _grammar(fmt: ToolFormat, functions: list[dict[str, Any]], forced: bool, parallel: bool,
             frame: Frame | None, answer: Any = None) -> str:
    """``frame`` places a forced answer (calls, or calls or ``answer``'s JSON); free text that
    may open a call needs none."""
    rules = gbnf.Rules()
    rules.reserve("root")
    calls = {}
    for f in functions:
        params = f.get("parameters") or {"type": "object", "properties": {}}
        try:
            calls[f["name"]] = schema_rule(rules, params, f"{f['name']}-args")
        except SchemaError as exc:
            raise invalid(f"tools: the parameters of {f['name']!r} are not supported: {exc}", param="tools") from None
    section = fmt.section_grammar(rules, calls, parallel)
    if fmt.end is not None and parallel:  # one call per section (Hermes): sections follow each other
        section = f'{section} ("\\n"? {section})*'
    if answer is not None:  # calls, or the response format's JSON
        try:
            value = f"{section} | {fmt.answer_grammar(schema_rule(rules, answer, 'answer'))}"
        except (SchemaError, RecursionError) as exc:
            raise invalid(f"unsupported JSON schema in the response format: {exc}", param="response_format") from None
        rules.define("root", frame(rules, f"({value})") if frame is not None else value)
    elif forced:
        rules.define("root", frame(rules, section) if frame is not None else section)
    else:
        rules.define("root", fmt.free_grammar(rules, section))
    return rules.text()

