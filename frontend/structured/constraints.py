"""The grammar a request's output must follow, from llama-server's ``grammar`` or ``json_schema``,
OpenAI's ``response_format``, or vLLM's ``guided_*`` / ``structured_outputs`` (a schema, a regex or
a choice the whole output matches, a GBNF grammar) and ``allowed_token_ids`` (token literals of
llama.cpp's grammars); every problem is a 400 found here, before the engine sees the request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from frontend.http.errors import invalid
from frontend.api.schemas import SamplingFields
from frontend.structured import gbnf
from frontend.structured.grammar import GrammarChecker, GrammarError
from frontend.structured.json_schema import SchemaError, schema_to_gbnf
from frontend.structured.regex import PatternError, pattern_to_gbnf

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}
# Where a model's reply format puts the JSON (gpt-oss: in its final channel): (rules, value) -> root.
Frame = Callable[[gbnf.Rules, str], str]


def output_grammar(checker: GrammarChecker, body: SamplingFields, frame: Frame | None = None) -> str | None:
    """GBNF for the request's output, or None when it is free text. ``frame`` places a schema's
    JSON in the reply (a grammar, a regex or a choice is the whole output as given)."""
    given = _constraints(body)
    if len(given) > 1:
        raise invalid(f"{given[0][0]} and {given[1][0]} cannot be used together", param=given[1][0])
    if not given:
        return None
    param, kind, value = given[0]
    if kind == "grammar":
        return check_grammar(checker, value, param)
    if kind == "regex":
        try:
            body_expr = pattern_to_gbnf(value, raw=True)
        except PatternError as exc:
            raise invalid(f"{param}: {exc}", param=param) from None
        return check_grammar(checker, f"root ::= {body_expr}\n", param)
    if kind == "choice":
        return check_grammar(checker, "root ::= " + " | ".join(gbnf.literal(c) for c in value) + "\n", param)
    if kind == "tokens":  # end-of-generation tokens are the grammar's end, not literals (sampling_params)
        return check_grammar(checker, "root ::= (" + " | ".join(f"<[{t}]>" for t in sorted(set(value))) + ")*\n",
                             param)
    if isinstance(value, str):  # a schema as JSON text (vLLM takes either)
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise invalid(f"{param}: not a JSON schema: {exc}", param=param) from None
    return schema_grammar(checker, value, param, frame)


def answer_schema(body: SamplingFields) -> Any:
    """The JSON schema the request's output must follow when that is its only constraint (a
    response format, ``json_schema``, ``guided_json``...), else None."""
    given = _constraints(body)
    if len(given) != 1 or given[0][1] != "schema":
        return None
    param, _, value = given[0]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise invalid(f"{param}: not a JSON schema: {exc}", param=param) from None
    return value


def _constraints(body: SamplingFields) -> list[tuple[str, str, Any]]:
    """(param, kind, value) of every output constraint the request sets: llama-server's, OpenAI's
    and vLLM's fields; kind is grammar, schema, regex, choice or tokens."""
    out: list[tuple[str, str, Any]] = []
    for param, kind in (("grammar", "grammar"), ("json_schema", "schema"), ("guided_json", "schema"),
                        ("guided_regex", "regex"), ("guided_choice", "choice"), ("guided_grammar", "grammar"),
                        ("allowed_token_ids", "tokens")):
        value = getattr(body, param)
        if param == "grammar" and value == "":  # llama-server's reading: no grammar
            continue
        if param == "json_schema" and value == {}:  # llama-server's reading: any JSON object
            value = ANY_JSON_OBJECT
        if value is not None:
            out.append((param, kind, value))
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        out.append(("response_format.schema" if fmt.schema else "response_format", "schema",
                    fmt.schema or ANY_JSON_OBJECT))
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.schema is None:
            raise invalid("response_format of type json_schema needs json_schema.schema",
                          param="response_format.json_schema")
        out.append(("response_format.json_schema.schema", "schema", fmt.json_schema.schema))
    so = body.structured_outputs
    if so is not None:
        for name, kind in (("json", "schema"), ("regex", "regex"), ("choice", "choice"), ("grammar", "grammar")):
            value = getattr(so, name)
            if value is not None:
                out.append((f"structured_outputs.{name}", kind, value))
        if so.json_object:
            out.append(("structured_outputs.json_object", "schema", ANY_JSON_OBJECT))
        if so.choice is not None and not so.choice:
            raise invalid("structured_outputs.choice needs at least one string", param="structured_outputs.choice")
    return out


def schema_grammar(checker: GrammarChecker, schema: Any, param: str, frame: Frame | None = None) -> str:
    try:
        text = schema_to_gbnf(schema, frame)
    except SchemaError as exc:
        raise invalid(f"unsupported JSON schema in {param}: {exc}", param=param) from None
    except RecursionError:  # thousands of properties, or nesting past Python's stack
        raise invalid(f"the JSON schema in {param} is too large to convert (too many properties or too deeply "
                      "nested)", param=param) from None
    return check_grammar(checker, text, param)


def check_grammar(checker: GrammarChecker, text: str, param: str) -> str:
    try:
        checker.check(text)
    except GrammarError as exc:
        raise invalid(f"{param}: {exc}", param=param) from None
    return text
