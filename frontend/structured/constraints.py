"""The grammar a request's output must follow, from ``grammar``, ``json_schema`` or
``response_format``; every problem is a 400 found here, before the engine sees the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from frontend.http.errors import invalid
from frontend.api.schemas import SamplingFields
from frontend.structured import gbnf
from frontend.structured.grammar import GrammarChecker, GrammarError
from frontend.structured.json_schema import SchemaError, schema_to_gbnf

ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}
# Where a model's reply format puts the JSON (gpt-oss: in its final channel): (rules, value) -> root.
Frame = Callable[[gbnf.Rules, str], str]


def output_grammar(checker: GrammarChecker, body: SamplingFields, frame: Frame | None = None) -> str | None:
    """GBNF for the request's output, or None when it is free text. ``frame`` places a schema's
    JSON in the reply (a ``grammar`` is the whole output as given)."""
    fmt = body.response_format
    given = [name for name in ("grammar", "json_schema") if getattr(body, name) is not None]
    if fmt is not None and fmt.type != "text":
        given.append("response_format")
    if len(given) > 1:
        raise invalid(f"{given[0]} and {given[1]} cannot be used together", param=given[1])
    if body.grammar is not None:
        return check_grammar(checker, body.grammar, "grammar")
    if body.json_schema is not None:
        return schema_grammar(checker, body.json_schema, "json_schema", frame)
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return schema_grammar(checker, fmt.schema or ANY_JSON_OBJECT, "response_format.schema", frame)
    if fmt.json_schema is None or fmt.json_schema.schema is None:
        raise invalid("response_format of type json_schema needs json_schema.schema",
                      param="response_format.json_schema")
    return schema_grammar(checker, fmt.json_schema.schema, "response_format.json_schema.schema", frame)


def schema_grammar(checker: GrammarChecker, schema: Any, param: str, frame: Frame | None = None) -> str:
    try:
        text = schema_to_gbnf(schema, frame)
    except SchemaError as exc:
        raise invalid(f"unsupported JSON schema in {param}: {exc}", param=param) from None
    return check_grammar(checker, text, param)


def check_grammar(checker: GrammarChecker, text: str, param: str) -> str:
    try:
        checker.check(text)
    except GrammarError as exc:
        raise invalid(f"{param}: {exc}", param=param) from None
    return text
