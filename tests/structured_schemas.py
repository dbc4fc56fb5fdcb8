"""JSON schemas covering what structured-output clients send, shared by the unit and API tests.

Strings are bounded (maxLength, enums, formats) where a base model could otherwise write on
past a test's small max_tokens; the grammar guarantees the shape, not the length.
"""

from __future__ import annotations

NAME = {"type": "string", "maxLength": 12}

SCHEMAS: dict[str, dict] = {
    "flat_required": {
        "type": "object",
        "properties": {"name": NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
    },
    "nested_object": {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {"id": {"type": "integer"}, "name": NAME},
                     "required": ["id", "name"]},
            "active": {"type": "boolean"},
        },
        "required": ["user", "active"],
    },
    "array_bounds": {"type": "array", "items": {"type": "integer", "minimum": -50, "maximum": 50},
                     "minItems": 2, "maxItems": 4},
    "enum": {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]},
    "const": {"type": "object", "properties": {"version": {"const": 2}, "kind": {"const": "point"}},
              "required": ["version", "kind"]},
    "any_of": {"type": "object", "properties": {"value": {"anyOf": [NAME, {"type": "integer"}, {"type": "null"}]}},
               "required": ["value"]},
    "one_of_tagged": {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "integer", "minimum": 1}},
             "required": ["kind", "r"]},
            {"type": "object", "properties": {"kind": {"const": "square"}, "side": {"type": "integer", "minimum": 1}},
             "required": ["kind", "side"]},
        ]
    },
    "refs_defs": {
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                            "required": ["x", "y"]}},
        "type": "object",
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"],
    },
    "recursive_ref": {
        "$defs": {"node": {"type": "object", "properties": {
            "label": {"type": "string", "maxLength": 6},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
        }, "required": ["label"]}},
        "$ref": "#/$defs/node",
    },
    "format_date": {"type": "object", "properties": {"day": {"type": "string", "format": "date"}},
                    "required": ["day"]},
    "format_uuid_email": {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"},
                       "when": {"type": "string", "format": "date-time"}},
        "required": ["id", "when"],
    },
    "pattern": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
                "required": ["code"]},
    "optional_only": {"type": "object", "properties": {"a": {"type": "integer"}, "b": NAME, "c": {"type": "boolean"}}},
    "additional_properties": {"type": "object", "additionalProperties": {"type": "integer", "maximum": 999},
                              "propertyNames": {"maxLength": 8}, "minProperties": 1, "maxProperties": 3},
    "nullable_types": {"type": "object", "properties": {"note": {"type": ["string", "null"], "maxLength": 10},
                                                        "count": {"type": ["integer", "null"]}},
                       "required": ["note", "count"]},
    "number_bounds": {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
                      "required": ["score"]},
    "tuple_prefix_items": {"type": "array", "prefixItems": [NAME, {"type": "integer"}, {"type": "boolean"}],
                           "items": False},
    "all_of": {"allOf": [
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"properties": {"b": {"enum": ["x", "y"]}}, "required": ["b"]},
    ]},
    "string_length": {"type": "object", "properties": {"word": {"type": "string", "minLength": 2, "maxLength": 5}},
                      "required": ["word"]},
}
