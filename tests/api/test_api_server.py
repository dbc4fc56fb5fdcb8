"""Server endpoints end to end: models, health, tokenizer endpoints, props, slots, metrics, HTTP
errors, and a client that disconnects or stops reading freeing its slot."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import openai
import pytest
from conftest import start_server
from tiny_models import tiny_llama

TIMEOUT_S = 60  # generation shares two cores with everything else


def get(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=TIMEOUT_S)


def post(server, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=TIMEOUT_S)


def metric(server, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", get(server, "/metrics").text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def busy_slots(server) -> int:
    return sum(slot["is_processing"] for slot in get(server, "/slots").json())


def test_health(server):
    r = get(server, "/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert r.headers["x-request-id"]


def test_models(server):
    sdk = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", _strict_response_validation=True)
    [model] = sdk.models.list().data
    assert model.id == "gemma-3-270m-q4_k_m.gguf" and model.object == "model"
    assert get(server, "/models").json()["data"][0]["id"] == model.id
    assert get(server, "/v1/models").json()["data"][0]["meta"]["n_ctx"] == 2048


def test_tokenize_and_detokenize(server):
    tokens = post(server, "/tokenize", {"content": "Hello world"}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    with_bos = post(server, "/tokenize", {"content": "Hello world", "add_special": True}).json()["tokens"]
    assert with_bos == [2, *tokens]
    pieces = post(server, "/tokenize", {"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    # llama-server's name of the text, and vLLM's
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"content": "Hello world", "prompt": "Hello world"}
    assert post(server, "/detokenize", {"tokens": [10**9]}).status_code == 400


def test_apply_template(server):
    prompt = post(server, "/apply-template", {"messages": [{"role": "user", "content": "Hi"}]}).json()["prompt"]
    # The GGUF has no template; its vocabulary is Gemma's, so Gemma's format (BOS is the tokenizer's).
    assert prompt == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_props(server):
    props = get(server, "/props").json()
    assert props["total_slots"] == 4
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert props["default_generation_settings"]["params"]["temperature"] == 0.8
    assert "<start_of_turn>" in props["chat_template"] and props["bos_token"] == "<bos>"


def test_slots_and_metrics_count_a_request(server):
    slots = get(server, "/slots").json()
    assert len(slots) == 4 and {s["n_ctx"] for s in slots} == {2048}
    before = metric(server, "llamacpp:tokens_predicted_total")
    out = post(server, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0,
                                           "ignore_eos": True}).json()
    assert out["usage"]["completion_tokens"] == 4
    assert metric(server, "llamacpp:tokens_predicted_total") >= before + 4
    assert metric(server, "llamacpp:requests_processing") == 0


def test_http_errors(server):
    assert get(server, "/v2/anything").status_code == 404
    r = get(server, "/v1/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{not json", timeout=TIMEOUT_S)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": 42}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                                              "some_future_field": {"x": 1}})
    assert r.status_code == 200  # unknown fields are ignored


def test_disconnect_frees_the_slot_and_keeps_the_prefix(server):
    body = {"prompt": "Write a long story about a dragon. " * 8, "max_tokens": 400, "temperature": 0,
            "ignore_eos": True, "stream": True}
    aborted = metric(server, "ggserve:requests_aborted_total")
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=TIMEOUT_S) as r:
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
        assert busy_slots(server) == 1
    deadline = time.monotonic() + 5
    while busy_slots(server) or metric(server, "ggserve:requests_aborted_total") == aborted:
        assert time.monotonic() < deadline, "the slot stayed busy after the client left"
        time.sleep(0.05)
    # The KV the aborted request computed stays cached: the same prompt again skips its prefill.
    again = post(server, "/v1/completions", {**body, "stream": False, "max_tokens": 1}).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_a_client_that_stops_reading_its_stream_is_dropped_after_the_timeout():
    """As llama-server's write timeout: a response the client reads nothing of for --timeout
    seconds ends, its connection closed and its generation aborted, even a generation with no end
    of its own (context shift and no n_predict). granian first holds a few MB of it."""
    args = ("-m", tiny_llama(), "-np", "2", "-c", "256", "--ctx-per-request", "64", "-t", "1", "--context-shift",
            "--timeout", "2")
    with start_server(*args) as stalled:
        body = json.dumps({"prompt": "Once upon a time", "n_predict": -1, "ignore_eos": True, "n_probs": 20,
                           "stream": True}).encode()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing, buffer little
            sock.connect(("127.0.0.1", stalled.port))
            sock.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + TIMEOUT_S
            while not busy_slots(stalled):
                assert time.monotonic() < deadline, "the generation did not start"
                time.sleep(0.05)
            while busy_slots(stalled):
                assert time.monotonic() < deadline, "the generation went on for its client that reads nothing"
                time.sleep(0.2)
            sock.settimeout(TIMEOUT_S)
            received = 0
            while chunk := sock.recv(1 << 16):  # what was buffered, then the end of the connection
                received += len(chunk)
        assert received > 1 << 20
        assert "read nothing for 2 s (--timeout)" in stalled.log()
        assert metric(stalled, "ggserve:requests_aborted_total") == 1


def test_huge_prompt_is_a_context_error(server):
    # Over 64 KiB the prompt is tokenized off the event loop; the answer is the same 400.
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "lorem ipsum " * 20000}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"
    assert r.json()["error"]["n_prompt_tokens"] > 20000


def test_megabytes_of_messages_are_refused_before_they_are_rendered(server):
    """Text that cannot fit however it tokenizes (each token covers at most the longest piece's
    bytes) is a 400 at once, with the least count of tokens it holds."""
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "lorem ipsum " * 100_000}]})
    error = r.json()["error"]
    assert r.status_code == 400 and error["type"] == "exceed_context_size_error" and "at least" in error["message"]
    assert error["n_prompt_tokens"] >= error["n_ctx"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_no_client_mistake_is_a_500(server, path: str):
    for body in [b"", b"null", b"[]", b'"str"', b"{}", b'{"messages": null, "prompt": null}', b"\xff\xfe",
                 b'{"messages": [{}], "prompt": [[]]}', b'{"n": 1e309}', b'{"stream": true}']:
        r = httpx.post(f"{server.base_url}{path}", content=body, timeout=TIMEOUT_S)
        assert r.status_code == 400, (body, r.text)
