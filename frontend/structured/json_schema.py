"""JSON Schema -> GBNF: a grammar whose every output is a JSON document valid against the schema.

Covered: ``type`` (one or a list), ``const``, ``enum``, ``anyOf``/``oneOf`` (alternatives; the
grammar cannot forbid a value matching two ``oneOf`` branches), ``allOf`` of object schemas
(merged), ``$ref`` to ``#``, ``#/$defs/..``, ``#/definitions/..`` or any JSON pointer in the
document (recursion allowed), objects (``properties``, ``required``, ``additionalProperties``),
arrays (``items``, ``prefixItems``, ``minItems``/``maxItems``), strings (``minLength``,
``maxLength``, ``pattern``, the formats date, time, date-time, uuid, email, ipv4), integers with
bounds, numbers with integral bounds, ``nullable`` (OpenAPI). Annotations (title, description,
examples, default, unknown formats...) are ignored.

Where the grammar must pick one reading:
- properties come in the schema's order; optional ones may be left out, never reordered;
- an object without ``additionalProperties`` takes no other properties (what every structured
  output client means; the output is still valid against the schema);
- whitespace is at most one space or one newline plus indentation between tokens, so a model
  cannot run away in whitespace.

Anything else a grammar cannot guarantee (``not``, ``if``, ``uniqueItems``, ``patternProperties``,
``multipleOf``, remote ``$ref``...) raises ``SchemaError`` naming the keyword and where it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from frontend.structured import gbnf
from frontend.structured.regex import PatternError, pattern_to_gbnf

MAX_DIGITS = 16  # integer part digits a number may have (the grammar stays finite)

_ANNOTATIONS = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "format", "$defs", "definitions", "discriminator", "strict", "contentEncoding",
    "contentMediaType", "example", "$anchor", "x-order",
}  # fmt: skip
_BY_TYPE = {
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties", "propertyNames"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "pattern"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "boolean": set(),
    "null": set(),
}
_COMBINERS = {"type", "const", "enum", "anyOf", "oneOf", "allOf", "$ref", "nullable"}
_KNOWN = _ANNOTATIONS | _COMBINERS | set().union(*_BY_TYPE.values())

_WS = '| " " | "\\n" [ \\t]{0,16}'
_CHAR = '[^"\\\\\\x00-\\x1F\\x7F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_FORMATS = {
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])',
    "time": '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? '
            '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
    "uuid": '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
    "email": '[a-zA-Z0-9._%+-]{1,64} "@" [a-zA-Z0-9-]{1,63} ("." [a-zA-Z0-9-]{1,63}){0,4} "." [a-zA-Z]{2,10}',
    "ipv4": '(("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9]? [0-9]) "."){3} '
            '("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9]? [0-9])',
}


class SchemaError(ValueError):
    """The schema is malformed or uses what the grammar cannot guarantee."""


def schema_to_gbnf(schema: Any, frame: Callable[[gbnf.Rules, str], str] | None = None) -> str:
    """The GBNF grammar (root rule ``root``) of JSON documents valid against ``schema``; ``frame``
    (rules, value expression) -> root expression places the document in a larger output."""
    rules = gbnf.Rules()
    rules.reserve("root")
    value = schema_rule(rules, schema, "root")
    rules.define("root", frame(rules, value) if frame is not None else value)
    return rules.text()


def schema_rule(rules: gbnf.Rules, schema: Any, hint: str) -> str:
    """Add the rules of ``schema`` to ``rules``; the expression of its values (for grammars that
    embed JSON, such as tool calls)."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        raise SchemaError("the JSON schema must be an object")
    return _Converter(schema, rules).visit(schema, "#", hint)


def subschema_rule(rules: gbnf.Rules, root: dict[str, Any], schema: Any, hint: str) -> str:
    """``schema_rule`` for a part of ``root`` (its ``$ref``s resolve against ``root``)."""
    return _Converter(root, rules).visit(schema, "#", hint)


class _Converter:
    def __init__(self, root: dict[str, Any], rules: gbnf.Rules) -> None:
        self.root = root
        self.rules = rules
        self._refs: dict[str, str] = {}  # $ref -> rule name

    # --------------------------------------------------------------- shared rules

    def ws(self) -> str:
        return self.rules.fixed("ws", _WS)

    def string_rule(self) -> str:
        char = self.rules.fixed("char", _CHAR)
        return self.rules.fixed("string", f'"\\"" {char}* "\\""')

    def number_rule(self) -> str:
        return self.rules.fixed(
            "number", f'"-"? {self.integral_rule()} ("." [0-9]{{1,{MAX_DIGITS}}})? ([eE] [+-]? [0-9]{{1,3}})?'
        )

    def integral_rule(self) -> str:
        return self.rules.fixed("integral", f'"0" | [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}')

    def value_rule(self) -> str:
        if "value" not in self.rules._rules:
            self.rules.reserve("value")
            ws = self.ws()
            obj = self.rules.fixed(
                "object", f'"{{" {ws} ({self.string_rule()} {ws} ":" {ws} value ({ws} "," {ws} {self.string_rule()} '
                          f'{ws} ":" {ws} value)*)? {ws} "}}"')
            arr = self.rules.fixed("array", f'"[" {ws} (value ({ws} "," {ws} value)*)? {ws} "]"')
            self.rules.define(
                "value", f'{obj} | {arr} | {self.string_rule()} | {self.number_rule()} | "true" | "false" | "null"'
            )
        return "value"

    # --------------------------------------------------------------- visiting

    def visit(self, schema: Any, path: str, hint: str) -> str:
        """A GBNF expression for the values ``schema`` allows."""
        if schema is True or schema == {}:
            return self.value_rule()
        if schema is False:
            raise SchemaError(f"{path}: the schema `false` allows no value")
        if not isinstance(schema, dict):
            raise SchemaError(f"{path}: a schema must be an object or a boolean")
        unknown = sorted(k for k in schema if k not in _KNOWN and not k.startswith("x-"))
        if unknown:
            raise SchemaError(f"{path}: unsupported keyword {unknown[0]!r}")
        if schema.get("nullable") is True:
            inner = {k: v for k, v in schema.items() if k != "nullable"}
            return f"({self.visit(inner, path, hint)} | \"null\")"
        if "$ref" in schema:
            return self.ref(schema["$ref"], path)
        if "const" in schema:
            return gbnf.literal(_json(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(f"{path}/enum: must be a non-empty array")
            return "(" + " | ".join(gbnf.literal(_json(v)) for v in values) + ")"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.alternatives(schema, key, path, hint)
        if "allOf" in schema:
            return self.visit(self.merge_all_of(schema, path), path, hint)
        types = schema.get("type")
        if types is None:
            types = self.infer_type(schema)
        if isinstance(types, list):
            if not types:
                raise SchemaError(f"{path}/type: an empty list of types allows no value")
            alts = [self.typed({**schema, "type": t}, t, path, hint) for t in types]
            return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"
        return self.typed(schema, types, path, hint)

    def infer_type(self, schema: dict[str, Any]) -> str | list[str]:
        present = [t for t, keys in _BY_TYPE.items() if keys & schema.keys()]
        if not present:
            return list(_BY_TYPE)  # annotations only: any value
        if present == ["integer", "number"]:
            return "number"
        return present

    def typed(self, schema: dict[str, Any], type_: Any, path: str, hint: str) -> str:
        if type_ not in _BY_TYPE:
            raise SchemaError(f"{path}/type: unknown type {type_!r}")
        if type_ == "object":
            return self.object(schema, path, hint)
        if type_ == "array":
            return self.array(schema, path, hint)
        if type_ == "string":
            return self.string(schema, path, hint)
        if type_ == "integer":
            return self.integer(schema, path, hint)
        if type_ == "number":
            return self.number(schema, path, hint)
        if type_ == "boolean":
            return '("true" | "false")'
        return '"null"'

    def alternatives(self, schema: dict[str, Any], key: str, path: str, hint: str) -> str:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise SchemaError(f"{path}/{key}: must be a non-empty array")
        base = {k: v for k, v in schema.items() if k != key}
        alts = []
        for i, branch in enumerate(branches):
            merged = branch if not _constraining(base) else self.merge(base, branch, f"{path}/{key}/{i}")
            alts.append(self.visit(merged, f"{path}/{key}/{i}", f"{hint}-{i}"))
        return self.rules.add(hint, " | ".join(alts))

    def ref(self, ref: Any, path: str) -> str:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaError(f"{path}/$ref: only references inside the schema (#...) are supported, not {ref!r}")
        name = self._refs.get(ref)
        if name is None:
            target = self.resolve(ref, path)
            name = self._refs[ref] = self.rules.reserve(ref.rsplit("/", 1)[-1] or "root-ref")
            self.rules.define(name, self.visit(target, ref, name))
        return name

    def resolve(self, ref: str, path: str) -> Any:
        node: Any = self.root
        for raw in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaError(f"{path}/$ref: {ref!r} points to nothing in the schema")
        return node

    def merge_all_of(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise SchemaError(f"{path}/allOf: must be a non-empty array")
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for i, part in enumerate(parts):
            merged = self.merge(merged, part, f"{path}/allOf/{i}")
        return merged

    def merge(self, a: dict[str, Any], b: Any, path: str) -> dict[str, Any]:
        """Both schemas at once, for objects (properties and required united) and same-keyword
        schemas that do not conflict."""
        if isinstance(b, dict) and "$ref" in b:
            b = {**self.resolve(b["$ref"], path), **{k: v for k, v in b.items() if k != "$ref"}}
        if not isinstance(b, dict):
            raise SchemaError(f"{path}: must be an object schema")
        if "allOf" in b:
            b = self.merge_all_of(b, path)
        out = dict(a)
        for key, value in b.items():
            if key == "properties":
                out["properties"] = {**out.get("properties", {}), **value}
            elif key == "required":
                out["required"] = list(dict.fromkeys([*out.get("required", []), *value]))
            elif key in out and out[key] != value and key not in _ANNOTATIONS:
                raise SchemaError(f"{path}: cannot combine two different {key!r} (allOf)")
            else:
                out[key] = value
        return out

    # --------------------------------------------------------------- types

    def object(self, schema: dict[str, Any], path: str, hint: str) -> str:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise SchemaError(f"{path}/properties: must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{path}/required: must be an array of property names")
        missing = [r for r in required if r not in props]
        additional = schema.get("additionalProperties", None if props else True)
        if missing and additional in (None, False):
            raise SchemaError(f"{path}/required: {missing[0]!r} is required but not among the properties")
        ws = self.ws()
        kvs: list[tuple[str, bool]] = []  # (rule of "key": value, required)
        for key, sub in props.items():
            value = self.visit(sub, f"{path}/properties/{key}", f"{hint}-{key}")
            kv = self.rules.add(f"{hint}-{key}-kv", f'{gbnf.literal(_json(key))} {ws} ":" {ws} {value}')
            kvs.append((kv, key in required))
        extra = None
        if additional not in (None, False):
            value = self.visit({} if additional is True else additional, f"{path}/additionalProperties",
                               f"{hint}-extra")
            # An extra key may repeat a declared one: a grammar cannot subtract strings cheaply.
            key_rule = self.string_rule()
            if "propertyNames" in schema:
                names = {"type": "string", **schema["propertyNames"]}
                key_rule = self.visit(names, f"{path}/propertyNames", f"{hint}-key")
            extra = self.rules.add(f"{hint}-extra-kv", f'{key_rule} {ws} ":" {ws} {value}')
        counted = {"minProperties", "maxProperties", "propertyNames"} & schema.keys()
        if counted and (props or extra is None):
            raise SchemaError(f"{path}: {sorted(counted)[0]} is supported only for objects with "
                              "additionalProperties and no properties (maps)")
        if counted and extra is not None:
            min_n = _count(schema, "minProperties", path, 0)
            max_n = _count(schema, "maxProperties", path, 0) if "maxProperties" in schema else None
            if max_n is not None and max_n < min_n:
                raise SchemaError(f"{path}: maxProperties is below minProperties")
            body = gbnf.repeat(extra, min_n, max_n, separator=f'{ws} "," {ws}')
            return self.rules.add(hint, f'"{{" {ws} {body} {ws} "}}"')
        body = self.members(kvs, extra, hint)
        return self.rules.add(hint, f'"{{" {ws} {body} {ws} "}}"' if body else f'"{{" {ws} "}}"')

    def members(self, kvs: list[tuple[str, bool]], extra: str | None, hint: str) -> str:
        """Properties in order, optional ones skippable, commas only between those present."""
        ws = self.ws()
        sep = f'{ws} "," {ws}'
        items = kvs + ([(f"({extra} ({sep} {extra})*)", False)] if extra else [])
        return members_rule(self.rules, items, sep, hint)

    def array(self, schema: dict[str, Any], path: str, hint: str) -> str:
        ws = self.ws()
        sep = f'{ws} "," {ws}'
        min_items = _count(schema, "minItems", path, 0)
        max_items = schema.get("maxItems")
        if max_items is not None:
            max_items = _count(schema, "maxItems", path, 0)
            if max_items < min_items:
                raise SchemaError(f"{path}: maxItems is below minItems")
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        parts: list[str] = []
        if prefix:
            if not isinstance(prefix, list):
                raise SchemaError(f"{path}/prefixItems: must be an array")
            values = [self.visit(s, f"{path}/prefixItems/{i}", f"{hint}-{i}") for i, s in enumerate(prefix)]
            if len(values) < min_items and items is False:
                raise SchemaError(f"{path}: minItems exceeds the tuple's length")
            # a tuple: all prefix items (llama.cpp's reading), then optional further items
            parts.append(f" {sep} ".join(values))
            n_more_min = max(0, min_items - len(values))
            n_more_max = None if max_items is None else max(0, max_items - len(values))
            if items is not False and n_more_max != 0:
                item = self.visit(items, f"{path}/items", f"{hint}-item")
                more = gbnf.repeat(f"{sep} {item}", n_more_min, n_more_max)
                parts.append(more)
            body = " ".join(parts)
        else:
            if items is False:
                body = ""
            else:
                item = self.visit(items, f"{path}/items", f"{hint}-item")
                body = gbnf.repeat(item, min_items, max_items, separator=sep)
        return self.rules.add(hint, f'"[" {ws} {body} {ws} "]"' if body else f'"[" {ws} "]"')

    def string(self, schema: dict[str, Any], path: str, hint: str) -> str:
        min_len = _count(schema, "minLength", path, 0)
        max_len = schema.get("maxLength")
        if max_len is not None:
            max_len = _count(schema, "maxLength", path, 0)
            if max_len < min_len:
                raise SchemaError(f"{path}: maxLength is below minLength")
        if "pattern" in schema:
            if "minLength" in schema or max_len is not None:
                raise SchemaError(f"{path}: pattern together with minLength/maxLength is not supported")
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise SchemaError(f"{path}/pattern: must be a string")
            try:
                body = pattern_to_gbnf(pattern)
            except PatternError as exc:
                raise SchemaError(f"{path}/pattern: {exc}") from None
            return self.rules.add(f"{hint}-pattern", f'"\\"" {body} "\\""')
        fmt = schema.get("format")
        if fmt in ("date", "time", "uuid", "email", "ipv4", "date-time"):
            if fmt == "date-time":
                body = f'{self.rules.fixed("date", _FORMATS["date"])} [Tt ] {self.rules.fixed("time", _FORMATS["time"])}'
            else:
                body = self.rules.fixed(fmt, _FORMATS[fmt])
            return self.rules.add(f"{fmt}-string", f'"\\"" {body} "\\""')
        if min_len == 0 and max_len is None:
            return self.string_rule()
        char = self.rules.fixed("char", _CHAR)
        return self.rules.add(f"{hint}-string", f'"\\"" {gbnf.repeat(char, min_len, max_len)} "\\""')

    def integer(self, schema: dict[str, Any], path: str, hint: str) -> str:
        lo, hi = _bounds(schema, path)
        if lo is None and hi is None:
            return self.rules.fixed("integer", f'"-"? {self.integral_rule()}')
        return self.rules.add(f"{hint}-int", _int_range(lo, hi))

    def number(self, schema: dict[str, Any], path: str, hint: str) -> str:
        bounds = {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema}
        if not bounds:
            return self.number_rule()
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or float(v) != int(v) for v in bounds.values()):
            raise SchemaError(f"{path}: number bounds must be whole numbers to be enforced by a grammar")
        lo, hi = schema.get("minimum"), schema.get("maximum")
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        nonzero_frac = f'"." [0-9]{{0,{MAX_DIGITS - 1}}} [1-9]'
        alts = []
        # integers in range, written plainly (no fraction, no exponent)
        int_lo = None if lo is None and ex_lo is None else int(lo if lo is not None else ex_lo + 1)
        int_hi = None if hi is None and ex_hi is None else int(hi if hi is not None else ex_hi - 1)
        if int_lo is None or int_hi is None or int_lo <= int_hi:
            alts.append(_int_range(int_lo, int_hi))
        # with a fraction: integer part k, value in (k, k+1) for k >= 0 or (k-1, k) for k < 0
        f_lo = None if lo is None and ex_lo is None else int(lo if lo is not None else ex_lo)
        f_hi = None if hi is None and ex_hi is None else int(hi if hi is not None else ex_hi)
        if f_lo is None or f_hi is None or f_lo < f_hi:
            # k in [f_lo, f_hi - 1] for k >= 0 means value k.xxx in (k, k+1): fraction non-zero.
            pos_lo = max(0, f_lo) if f_lo is not None else 0
            pos_hi = None if f_hi is None else f_hi - 1
            if pos_hi is None or pos_lo <= pos_hi:
                alts.append(f"({_int_range(pos_lo, pos_hi)}) {nonzero_frac}")
            if f_lo is None or f_lo < 0:  # negative: -k.xxx in (-(k+1), -k) for k in [max(0,-f_hi), -f_lo-1]
                neg_lo = 0 if f_hi is None or f_hi >= 0 else -f_hi
                neg_hi = None if f_lo is None else -f_lo - 1
                if neg_hi is None or neg_lo <= neg_hi:
                    alts.append(f'"-" ({_int_range(neg_lo, neg_hi)}) {nonzero_frac}')
        if not alts:
            raise SchemaError(f"{path}: the bounds allow no number")
        return self.rules.add(f"{hint}-num", " | ".join(f"({a})" for a in alts))


def members_rule(rules: gbnf.Rules, items: list[tuple[str, bool]], sep: str, hint: str) -> str:
    """The members of an object (``items``: the expression of each and whether it is required), in
    order, optional ones skippable, ``sep`` only between those present ("" when there are none)."""
    if not items:
        return ""

    # rest(i, first): the members from i on; first says whether nothing was written yet.
    memo: dict[tuple[int, bool], str] = {}

    def rest(i: int, first: bool) -> str:
        if i == len(items):
            return ""
        key = (i, first)
        if key in memo:
            return memo[key]
        kv, req = items[i]
        lead = kv if first else f"{sep} {kv}"
        after = rest(i + 1, False)
        taken = f"{lead} {after}".strip()
        if req:
            expr = taken
        else:
            skipped = rest(i + 1, first)
            expr = f"({taken} | {skipped})" if skipped else f"({taken})?"
        if len(items) - i > 2:  # name long tails so the grammar stays linear in size
            expr = rules.add(f"{hint}-from-{i}{'' if first else '-more'}", expr)
        memo[key] = expr
        return expr

    return rest(0, True)


def _constraining(schema: dict[str, Any]) -> bool:
    return any(k not in _ANNOTATIONS for k in schema)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _count(schema: dict[str, Any], key: str, path: str, default: int) -> int:
    value = schema.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{path}/{key}: must be a non-negative integer")
    if value > 10000:
        raise SchemaError(f"{path}/{key}: {value} is over the supported 10000")
    return value


def _bounds(schema: dict[str, Any], path: str) -> tuple[int | None, int | None]:
    """Inclusive integer bounds from minimum/maximum/exclusive*."""
    lo: int | None = None
    hi: int | None = None
    for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        if key not in schema:
            continue
        value = schema[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(f"{path}/{key}: must be a number")
        if key == "minimum":
            b = math.ceil(value)
            lo = b if lo is None else max(lo, b)
        elif key == "exclusiveMinimum":
            b = math.floor(value) + 1
            lo = b if lo is None else max(lo, b)
        elif key == "maximum":
            b = math.floor(value)
            hi = b if hi is None else min(hi, b)
        else:
            b = math.ceil(value) - 1
            hi = b if hi is None else min(hi, b)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(f"{path}: the bounds allow no integer")
    for b in (lo, hi):
        if b is not None and abs(b) >= 10 ** (MAX_DIGITS - 1):
            raise SchemaError(f"{path}: bound {b} has too many digits")
    return lo, hi


def _int_range(lo: int | None, hi: int | None) -> str:
    """GBNF for the decimal integers in [lo, hi] (None: unbounded), without leading zeros."""
    alts = []
    if lo is None or lo < 0:  # negatives: "-" magnitude in [max(1, -hi), -lo]
        mag_lo = 1 if hi is None or hi >= 0 else -hi
        mag_hi = None if lo is None else -lo
        alts.append(f'"-" ({_nonneg_range(mag_lo, mag_hi)})')
    if hi is None or hi >= 0:
        alts.append(_nonneg_range(max(0, lo) if lo is not None else 0, hi))
    return " | ".join(f"({a})" for a in alts) if len(alts) > 1 else alts[0]


def _nonneg_range(lo: int, hi: int | None) -> str:
    alts = []
    top = hi if hi is not None else 10 ** (MAX_DIGITS - 1) - 1
    n_lo, n_hi = len(str(lo)), len(str(top))
    for n in range(n_lo, n_hi + 1):
        a = max(lo, 0 if n == 1 else 10 ** (n - 1))
        b = min(top, 10**n - 1)
        alts.append(_same_length_range(str(a), str(b)))
    return " | ".join(alts)


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of one length between lo and hi (inclusive)."""
    if not lo:
        return ""
    if lo == hi:
        return gbnf.literal(lo)
    n = len(lo) - 1
    if lo[1:] == "0" * n and hi[1:] == "9" * n:
        head = f"[{lo[0]}-{hi[0]}]" if lo[0] != hi[0] else gbnf.literal(lo[0])
        return f"{head} [0-9]{{{n}}}" if n else head
    if lo[0] == hi[0]:
        return f"{gbnf.literal(lo[0])} ({_same_length_range(lo[1:], hi[1:])})"
    parts = [f"{gbnf.literal(lo[0])} ({_same_length_range(lo[1:], '9' * n)})"]
    if int(hi[0]) - int(lo[0]) > 1:
        mid = f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}]"
        parts.append(f"{mid} [0-9]{{{n}}}")
    parts.append(f"{gbnf.literal(hi[0])} ({_same_length_range('0' * n, hi[1:])})")
    return "(" + " | ".join(parts) + ")"
