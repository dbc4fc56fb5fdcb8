"""Values written as JSON or as Python literals: LFM2's calls, and the templates that write a
value with Jinja's ``{{ value }}`` (``True``, ``{'a': None}``: MiniCPM5). JSON is read by JSON's
rules (``"\\/"``, surrogate pairs); anything else with ``ast`` (parsed, never evaluated): strings,
numbers, booleans, None, lists, tuples and dicts with string keys, nothing else (JSON's words
``true``, ``false``, ``null`` too, as a value mixing both writes them)."""

from __future__ import annotations

import ast
import math
from typing import Any

from frontend.structured.tool_formats.base import json_value

_WORDS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def literal_value(text: str) -> Any:
    """A value written as JSON (read by JSON's rules: ``"\\/"``, surrogate pairs) or as a Python
    literal (single quotes, ``True``, ``None``)."""
    try:
        return json_value(text)
    except ValueError:
        pass
    try:
        return _literal(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, RecursionError) as exc:
        raise ValueError(f"not a Python literal: {text!r}") from exc


def _literal(node: ast.AST) -> Any:
    """A literal's value (JSON's types only); ValueError for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)) or (
            isinstance(node, ast.Constant) and node.value is None):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise ValueError("not a finite number")
        if isinstance(node.value, str):  # a surrogate pair's escapes: one character; a lone one: a ValueError
            return node.value.encode("utf-16", "surrogatepass").decode("utf-16")
        return node.value
    if isinstance(node, ast.Name) and node.id in _WORDS:
        return _WORDS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("a sign before something that is not a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            if key is None or not isinstance(k := _literal(key), str):
                raise ValueError("a dict key that is not a string")
            out[k] = _literal(value)
        return out
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")
