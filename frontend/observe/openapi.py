"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /openapi.json``.

Request and response bodies are the msgspec Structs of ``frontend.api.schemas``, and msgspec writes
their JSON schemas, so the document describes exactly what requests decode into and responses
encode from. Each route of the app's table carries its ``Operation`` (aliases such as
``/chat/completions`` share one), so a route cannot be served without being documented. Every
error, whatever its status, is the API's error object (the ``default`` response): OpenAI's
``ErrorResponse``, Anthropic's on its routes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from frontend.api.schemas import ErrorResponse

_REF_TEMPLATE = "#/components/schemas/{name}"
_FREE_FORM: dict[str, Any] = {}  # a body this document does not pin down (llama-server's /props, /slots)
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
}


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    request: type | None = None  # the JSON body's Struct
    response: type | None = None  # the 200 body's Struct; None: any body of ``content_type``
    stream_event: type | None = None  # the data of each SSE event when the request sets "stream"
    content_type: str = "application/json"
    loading_status: bool = False  # answers 503 with its own body while not serving (/health)
    error: type = ErrorResponse  # the error body's Struct (Anthropic's routes have their own)
    parameters: tuple[dict[str, Any], ...] = ()  # OpenAPI parameter objects (path and query)
    no_content: bool = False  # succeeds with a 204 and no body (DELETE /v1/stream)


class DocumentedRoute(Protocol):
    operation: Operation
    auth: bool  # needs an API key when keys are configured


def document(routes: Mapping[str, Mapping[str, DocumentedRoute]], api_keys: bool) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (path -> method -> route); ``api_keys``: whether the
    server has keys, so that routes with ``auth`` require one."""
    operations = [route.operation for by_method in routes.values() for route in by_method.values()]
    structs = sorted({t for op in operations for t in (op.request, op.response, op.stream_event, op.error)
                      if t is not None}, key=lambda t: (t.__module__, t.__name__))
    schemas, components = msgspec.json.schema_components(structs, ref_template=_REF_TEMPLATE)
    refs = dict(zip(structs, schemas, strict=True))
    for request in {op.request for op in operations if op.request is not None}:
        ref = refs[request].get("$ref", "")
        if ref:
            _null_means_default(components[ref.rpartition("/")[2]])
    paths = {
        path: {
            method.lower(): _operation(path, method, route.operation, refs, api_keys and route.auth)
            for method, route in by_method.items()
        }
        for path, by_method in routes.items()
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "ggserve", "version": _version(),
                 "description": "OpenAI-compatible API (and llama-server's extras) for a GGUF model"},
        "paths": paths,
        "components": {"schemas": components},
    }
    if api_keys:
        doc["components"]["securitySchemes"] = _SECURITY_SCHEMES
    return doc


def _null_means_default(schema: dict[str, Any]) -> None:
    """A request body's optional top-level fields take null too: it means their default (as
    ``Request.decode`` reads it)."""
    required = set(schema.get("required", ()))
    properties = schema.get("properties", {})
    for name, prop in properties.items():
        options = prop.get("anyOf", [prop])
        if name not in required and not any(o.get("type") == "null" for o in options):
            properties[name] = {"anyOf": [prop, {"type": "null"}]}


def _operation(path: str, method: str, op: Operation, refs: dict[type, Any], needs_key: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary,
                           "operationId": f"{method.lower()}{path.replace('/', '_').replace('{', '').replace('}', '')}"}
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": refs[op.request]}}}
    ok: dict[str, Any] = {op.content_type: {"schema": refs[op.response] if op.response else _FREE_FORM}}
    if op.stream_event is not None:
        ok["text/event-stream"] = {"schema": _sse_event(refs[op.stream_event], refs[op.error])}
    responses: dict[str, Any] = ({"204": {"description": "No content"}} if op.no_content
                                 else {"200": {"description": "OK", "content": ok}})
    if op.loading_status:
        responses["503"] = {"description": "Not serving now: loading, restarting or draining",
                            "content": {"application/json": {"schema": refs[op.response]}}}
    responses["default"] = {"description": "An error object",
                            "content": {"application/json": {"schema": refs[op.error]}}}
    out["responses"] = responses
    if needs_key:
        out["security"] = [{name: []} for name in _SECURITY_SCHEMES]
    return out


def _sse_event(chunk: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    """One event of a stream (before OpenAPI 3.2, a text/event-stream schema describes an event):
    its data is a chunk's JSON, an error's (after the stream started), or the final ``[DONE]``."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {"contentMediaType": "application/json", "contentSchema": {"anyOf": [chunk, error]}},
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("ggserve")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
