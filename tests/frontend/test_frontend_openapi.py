"""The OpenAPI document built from the route table and the msgspec Structs (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from frontend.routes.table import build_routes
from frontend.observe.openapi import document

REF = "#/components/schemas/"


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op for path, by_method in doc["paths"].items() for method, op in by_method.items()}


@pytest.mark.parametrize("api_keys", [False, True])
def test_document_is_valid_openapi_and_every_operation_loads(api_keys: bool) -> None:
    schema = schemathesis.openapi.from_dict(document(build_routes(False), api_keys))
    schema.validate()
    assert all(result.ok() for result in schema.get_all_operations())


def test_every_route_and_method_is_documented() -> None:
    routes = build_routes(False)
    documented = _operations(document(routes, api_keys=False))
    assert set(documented) == {(method, path) for path, by_method in routes.items() for method in by_method}


def test_bodies_are_the_msgspec_structs() -> None:
    ops = _operations(document(build_routes(False), api_keys=False))
    chat = ops["POST", "/v1/chat/completions"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": REF + "ChatCompletionRequest"}
    ok = chat["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": REF + "ChatCompletion"}
    event_data = ok["text/event-stream"]["schema"]["properties"]["data"]
    assert event_data["else"]["contentSchema"]["anyOf"][0] == {"$ref": REF + "ChatCompletionChunk"}
    assert ops["POST", "/tokenize"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": REF + "TokenizeRequest"}
    for (_, path), op in ops.items():  # Anthropic's Messages API has its own error shape
        error = "AnthropicError" if path.startswith("/v1/messages") else "ErrorResponse"
        assert op["responses"]["default"]["content"]["application/json"]["schema"] == {"$ref": REF + error}


@pytest.mark.parametrize("metrics_no_auth", [False, True])
def test_operations_need_a_key_only_when_keys_are_configured(metrics_no_auth: bool) -> None:
    routes = build_routes(metrics_no_auth)
    assert all("security" not in op for op in _operations(document(routes, api_keys=False)).values())
    with_keys = _operations(document(routes, api_keys=True))
    open_routes = {("GET", "/health"), ("GET", "/v1/health"), ("GET", "/ping"), ("POST", "/ping"),
                   ("GET", "/version"), ("GET", "/openapi.json"), ("GET", "/"),
                   ("GET", "/webui/app.js"), ("GET", "/webui/markdown.js"), ("GET", "/webui/style.css")}
    if metrics_no_auth:
        open_routes.add(("GET", "/metrics"))
    assert {key for key, op in with_keys.items() if "security" not in op} == open_routes
