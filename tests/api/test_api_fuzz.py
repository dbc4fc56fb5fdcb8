"""Fuzzing the running server from its own /openapi.json with schemathesis.

Every operation gets valid and invalid requests generated from the document. Whatever a request
holds, the server answers it without a 5xx, every error is the API's error object (OpenAI's;
Anthropic's on its Messages API), responses match the documented schemas, and the server stays
up and healthy afterwards. Valid requests
have their generation bounded (max_tokens, n, prompt count) so the fuzzing takes a minute or two
on two cores; only the costly values are lowered, so 0, negative and mistyped ones still reach the
server. Invalid requests go as generated (they never reach the engine).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from conftest import ServerHandle
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from frontend.api.anthropic import AnthropicError
from frontend.routes.table import EMBEDDINGS, RERANKING, build_routes

MAX_EXAMPLES = 20  # per operation and generation mode (valid / invalid data)
MAX_NEW_TOKENS = 4
MAX_CHOICES = 2
MAX_PROMPTS = 3


def _fuzz_cases() -> list[tuple[str, GenerationMode]]:
    """(operation, mode) pairs: one path per route, since aliases share the route and its handler;
    operations without a body have nothing to make invalid, so valid requests only."""
    cases: list[tuple[str, GenerationMode]] = []
    seen: set[int] = set()
    for path, by_method in build_routes(False).items():
        for method, route in by_method.items():
            if id(route) in seen:
                continue
            seen.add(id(route))
            cases.append((f"{method} {path}", GenerationMode.POSITIVE))
            if route.operation.request is not None:
                cases.append((f"{method} {path}", GenerationMode.NEGATIVE))
    return cases


CASES = _fuzz_cases()
# Operations that answer errors in Anthropic's shape (its Messages API)
ANTHROPIC = {f"{method} {path}" for path, by_method in build_routes(False).items()
             for method, route in by_method.items() if route.operation.error is AnthropicError}
EMBEDDING_ROUTES = {f"{method} {path}" for path, by_method in build_routes(False).items()
                    for method, route in by_method.items() if route.needs in (EMBEDDINGS, RERANKING)}
CONFIG = schemathesis.Config.from_dict({
    # Schema-valid requests the server rightly refuses exist (max_tokens 0, an empty prompt, a
    # prompt over the context): a JSON schema cannot say everything a 400 knows.
    "checks": {"positive_data_acceptance": {"enabled": False}},
})


@pytest.fixture(scope="module")
def api_schema(server: ServerHandle) -> schemathesis.BaseSchema:
    """The served document (``from_url`` would leave out the operation serving it)."""
    document = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document, config=CONFIG)


def test_openapi_document_is_valid_and_lists_every_route(server: ServerHandle) -> None:
    response = httpx.get(f"{server.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    document = response.json()
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert all(result.ok() for result in schema.get_all_operations())  # each operation loads
    documented = {(method.upper(), path) for path, by_method in document["paths"].items() for method in by_method}
    routed = {(method, path) for path, by_method in build_routes(False).items() for method in by_method}
    assert documented == routed


def _bound_generation(body: Any) -> None:
    """Lower the values that make a generation slow; others (0, negative, mistyped) stay."""
    if not isinstance(body, dict):
        return
    if body.get("max_tokens") in (None, -1) or _int_over(body.get("max_tokens"), MAX_NEW_TOKENS):
        body["max_tokens"] = MAX_NEW_TOKENS
    if body.get("max_completion_tokens") == -1 or _int_over(body.get("max_completion_tokens"), MAX_NEW_TOKENS):
        body["max_completion_tokens"] = MAX_NEW_TOKENS
    if body.get("n_predict") == -1 or _int_over(body.get("n_predict"), MAX_NEW_TOKENS):
        body["n_predict"] = MAX_NEW_TOKENS
    if "input" in body and (body.get("max_output_tokens") is None  # /v1/responses
                            or _int_over(body.get("max_output_tokens"), MAX_NEW_TOKENS)):
        body["max_output_tokens"] = MAX_NEW_TOKENS
    for name in ("n", "n_cmpl"):
        if _int_over(body.get(name), MAX_CHOICES):
            body[name] = MAX_CHOICES
    if isinstance(body.get("prompt"), list):
        body["prompt"] = body["prompt"][:MAX_PROMPTS]


def _int_over(value: object, limit: int) -> bool:
    return type(value) is int and value > limit  # bool is an int too: leave True/False alone


def _assert_error(label: str, response: schemathesis.Response) -> None:
    body = response.json()
    if label in ANTHROPIC:
        assert isinstance(body, dict) and body.get("type") == "error" and set(body) == {"type", "error"}, body
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str), body
        return
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str), body
    assert error["code"] == response.status_code, body


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
def test_fuzzed_requests_get_no_server_error_and_api_errors(server: ServerHandle,
                                                              api_schema: schemathesis.BaseSchema, label: str,
                                                              mode: GenerationMode) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: each example is a request to a live server
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def fuzz(case: schemathesis.Case) -> None:
        if mode == GenerationMode.POSITIVE:  # invalid requests never reach the engine: leave them as generated
            _bound_generation(case.body)
        response = case.call(base_url=server.base_url, timeout=60)
        # /infill answers 501 on a model without fill-in-the-middle tokens (the test model), slot actions
        # without --slot-save-path (this server), transcriptions without an audio projector, and
        # embedding and rerank routes on this generation server, as llama-server, and router mode's
        # model management on this server of one model
        unsupported = response.status_code == 501 and (
            label in ("POST /infill", "POST /slots/{id_slot}", "POST /v1/audio/transcriptions", "POST /models/load",
                      "POST /models/unload", "GET /models/sse")
            or label in EMBEDDING_ROUTES)
        assert response.status_code < 500 or unsupported, f"{label}: {response.status_code} {response.text[:500]}"
        if response.status_code >= 400:
            _assert_error(label, response)
        if not unsupported:  # schemathesis counts every 5xx as a server error
            case.validate_response(response)

    fuzz()


def test_integer_past_64_bits_is_a_400_not_a_500(server: ServerHandle) -> None:
    """Found by probing beyond the fuzzer's integers: msgspec decodes it, the engine message could not carry it."""
    body = b'{"prompt": "Hi", "max_tokens": 2, "top_k": 99999999999999999999999999}'
    response = httpx.post(f"{server.base_url}/v1/completions", content=body, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "top_k"


def test_server_is_alive_and_healthy_after_fuzzing(server: ServerHandle) -> None:
    assert server.proc.poll() is None, server.log()[-5000:]
    assert httpx.get(f"{server.base_url}/health", timeout=10).json() == {"status": "ok"}
    reply = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": "Hello", "max_tokens": 2}, timeout=60)
    assert reply.status_code == 200, reply.text
