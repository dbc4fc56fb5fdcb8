"""The frontend process over HTTP, against a scripted scheduler (tests/frontend_support.py).

What needs exact control of the engine lives here: queueing (pings, disconnect while waiting),
rejections (503 + Retry-After, the openai SDK's retry), failures mid-stream, loading, workers.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable

import httpx
import openai
import pytest
from frontend_support import FakeScheduler, frontend_config, gemma_path, run_frontend, self_signed_cert

from frontend.text.tokenizer import Tokenizer
from ipc.protocol import AddRequest, ErrorCode, Hello

REPLY = "Hello there! How are you? 🙂 I am fine, thank you."
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def reply_ids() -> list[int]:
    tok = Tokenizer(gemma_path())
    ids = tok.tokenize(REPLY, add_special=False, parse_special=False)
    tok.close()
    return ids


@pytest.fixture(scope="module")
def served(tmp_path_factory, reply_ids):
    cfg = frontend_config(str(tmp_path_factory.mktemp("run")), max_body_size=4096, metrics=True)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids) as fake, run_frontend(cfg) as url:
        yield fake, url


@pytest.fixture
def fake(served) -> FakeScheduler:
    fake = served[0]
    yield fake
    fake.hold, fake.reject, fake.fail_after = False, [], -1


@pytest.fixture
def url(served) -> str:
    return served[1]


def client(url: str, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", _strict_response_validation=True, **kw)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ----------------------------------------------------------------------------- plain HTTP


def test_every_response_has_a_request_id(url: str):
    for response in [httpx.get(f"{url}/health"), httpx.get(f"{url}/nope"), httpx.post(f"{url}/v1/models"),
                     httpx.post(f"{url}/v1/chat/completions", content=b"{")]:
        assert len(response.headers["x-request-id"]) == 32
    assert httpx.get(f"{url}/health", headers={"x-request-id": "trace-42"}).headers["x-request-id"] == "trace-42"


def test_router_modes_model_management_is_a_501_on_a_server_of_one_model(url: str):
    for method, path in (("POST", "/models/load"), ("POST", "/models/unload"), ("GET", "/models/sse")):
        r = httpx.request(method, f"{url}{path}", json={"model": "x"})
        assert r.status_code == 501 and "--models-dir" in r.json()["error"]["message"]


def test_unknown_route_and_wrong_method(url: str):
    r = httpx.get(f"{url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{url}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.post(f"{url}/health")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/props"])
def test_head_answers_gets_headers_without_a_body(url: str, path: str):
    got, head = httpx.get(f"{url}{path}"), httpx.head(f"{url}{path}")
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == got.headers["content-length"]


def test_invalid_json_is_400_not_500(url: str):
    r = httpx.post(f"{url}/v1/chat/completions", content=b'{"messages": [')
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{url}/v1/completions", json={"prompt": {"a": 1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                       "top_logprobs": 2})  # without logprobs: OpenAI's 400
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"


DEEP = b"[" * 1200 + b"]" * 1200  # nested deeper than msgspec's decoder goes


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\xff"}]}'),  # not UTF-8
    ("/v1/chat/completions", b'{"messages": [], "chat_template_kwargs": {"a": ' + DEEP + b"}}"),
    ("/v1/messages", b'{"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "\xff"}]}'),
    ("/v1/messages", b'{"model": "m", "max_tokens": 1, "messages": [], "tools": [{"name": "t", "input_schema": '
                     b'{"a": ' + DEEP + b"}}]}"),
    ("/tokenize", b'{"content": "\xfe"}'),
    ("/completion", b'{"prompt": "x", "json_schema": {"a": ' + DEEP + b"}}"),
])
def test_unreadable_json_is_a_400(url: str, path: str, body: bytes):
    r = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("field, value", [
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]), ("function_call", {"name": "f"}),
    ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
    ("web_search_options", {"search_context_size": "low"}),
])
def test_openai_fields_asking_for_what_is_not_served_are_400s_naming_them(url: str, field: str, value: object):
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    r = httpx.post(f"{url}/v1/chat/completions", json=body | {field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    neutral = {"functions": [], "function_call": "auto", "audio": None, "modalities": ["text"],
               "web_search_options": None}
    assert httpx.post(f"{url}/v1/chat/completions", json=body | {field: neutral[field]}).status_code == 200


def test_body_over_the_limit_is_413(url: str):
    r = httpx.post(f"{url}/v1/completions", content=b"x" * 5000)
    assert r.status_code == 413
    chunked = httpx.post(f"{url}/v1/completions", content=(b"x" * 1000 for _ in range(5)))  # no content-length
    assert chunked.status_code == 413


def test_timeout_bounds_a_stalled_body_and_slow_headers(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path), timeout=1.0)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg):
        def answer(request: bytes) -> tuple[bytes, float]:
            with socket.create_connection((cfg.host, cfg.port), timeout=10) as sock:
                sock.sendall(request)
                t0 = time.monotonic()
                return sock.recv(65536), time.monotonic() - t0

        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n")
        response, waited = answer(head + b'{"prompt": ')
        assert response.startswith(b"HTTP/1.1 408") and b"--timeout" in response and 0.8 < waited < 5
        response, waited = answer(b"POST /v1/completions HTTP/1.1\r\nHost:")  # headers never end
        assert response == b"" and 0.8 < waited < 5  # granian closes the connection
        with socket.create_connection((cfg.host, cfg.port), timeout=10) as sock:  # a byte every 0.3 s
            sock.sendall(head)
            t0 = time.monotonic()
            for _ in range(20):
                try:
                    sock.sendall(b" ")
                except OSError:
                    break
                time.sleep(0.3)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5  # the whole body


def test_bodies_received_at_once_are_bounded_per_worker(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path), max_body_size=4096, http_workers=1)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4096\r\n\r\n")
        uploads = []
        try:
            for _ in range(8):  # each all but the last bytes of its body, never finished
                sock = socket.create_connection((cfg.host, cfg.port), timeout=10)
                sock.sendall(head + b" " * 4000)
                uploads.append(sock)
            time.sleep(0.5)
            with socket.create_connection((cfg.host, cfg.port), timeout=10) as sock:
                sock.sendall(head + b" " * 4000)
                answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503") and b"retry-after" in answer.lower()
        finally:
            for sock in uploads:
                sock.close()
        time.sleep(0.5)  # their bytes are given back as their connections close
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


def test_context_overflow_is_400_with_llama_server_fields(url: str):
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "word " * 300, "max_tokens": 4})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 256 and error["n_prompt_tokens"] > 256


def test_embeddings_and_rerank_on_a_generation_server_are_501_naming_the_flag(url: str):
    r = httpx.post(f"{url}/v1/embeddings", json={"input": "hi"})
    assert r.status_code == 501 and "`--embeddings`" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert r.status_code == 501 and "`--reranking`" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------- generation


def test_chat_with_the_openai_sdk(url: str, fake: FakeScheduler):
    out = client(url).chat.completions.create(model="x", messages=CHAT["messages"], max_tokens=5, logprobs=True,
                                              top_logprobs=2, n=2, seed=5)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].message.content == "Hello there! How are"
    assert len(out.choices[0].logprobs.content) == 5
    assert all(len(t.top_logprobs) == 2 for t in out.choices[0].logprobs.content)
    assert (out.usage.completion_tokens, out.usage.prompt_tokens_details.cached_tokens) == (10, 1)
    seeds = [m.sampling.seed for m in fake.messages(AddRequest)[-2:]]
    assert seeds == [5, 6]


def test_stream_matches_non_stream(url: str):
    kwargs = {"model": "x", "messages": CHAT["messages"], "stop": ["you?"]}
    whole = client(url).chat.completions.create(**kwargs)
    chunks = list(client(url).chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_echo_and_logprobs_offsets(url: str):
    out = client(url).completions.create(model="x", prompt="Say:", max_tokens=3, echo=True)
    assert out.choices[0].text == "Say:Hello there!"
    out = client(url).completions.create(model="x", prompt=[[9259], [9259, 1902]], max_tokens=2, logprobs=1)
    assert len(out.choices) == 2
    logprobs = out.choices[0].logprobs
    assert logprobs.tokens == ["Hello", " there"] and logprobs.text_offset == [0, 5]
    assert logprobs.top_logprobs == [{"Hello": -0.5}, {" there": -0.5}]
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "x", "echo": True, "logprobs": 1, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_pings_while_queued_then_tokens(url: str, fake: FakeScheduler):
    fake.hold = True
    lines = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 2}) as r:
        for line in r.iter_lines():
            lines.append(line)
            if lines.count(": ping") == 2:
                fake.release()
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.headers["connection"] == "close"  # the stream ends with the connection
    assert lines.count(": ping") >= 2
    assert lines.index(": ping") < min(i for i, line in enumerate(lines) if '"content":"Hello"' in line)
    assert [line for line in lines if line][-1] == "data: [DONE]"


def test_rejection_before_the_stream_starts_is_a_real_503(url: str, fake: FakeScheduler):
    fake.reject = [ErrorCode.OVERLOADED]
    r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "unavailable_error"


def test_openai_sdk_retries_after_503(url: str, fake: FakeScheduler):
    fake.reject = [ErrorCode.OVERLOADED]
    before = len(fake.messages(AddRequest))
    out = client(url, max_retries=2).chat.completions.create(model="x", messages=CHAT["messages"], max_tokens=2)
    assert out.choices[0].message.content == "Hello there"
    assert len(fake.messages(AddRequest)) - before == 2  # rejected once, retried once
    fake.reject = [ErrorCode.OVERLOADED]
    with pytest.raises(openai.APIStatusError) as info:
        client(url, max_retries=0).chat.completions.create(model="x", messages=CHAT["messages"])
    assert info.value.status_code == 503


@pytest.mark.parametrize(("code", "status"), [(ErrorCode.INVALID_REQUEST, 400), (ErrorCode.EXECUTOR_FAILED, 503),
                                              (ErrorCode.SHUTTING_DOWN, 503)])
def test_engine_errors_have_their_status(url: str, fake: FakeScheduler, code: ErrorCode, status: int):
    fake.reject = [code]
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "x"}).status_code == status


def test_error_mid_stream_is_an_error_event(url: str, fake: FakeScheduler):
    fake.fail_after = 3
    with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "x", "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200
    assert lines[-1].startswith('data: {"error":') and '"code":503' in lines[-1]
    assert "data: [DONE]" not in lines
    fake.fail_after = 3
    assert httpx.post(f"{url}/v1/completions", json={"prompt": "x"}).status_code == 503


def test_disconnect_while_queued_aborts(url: str, fake: FakeScheduler):
    fake.hold = True
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=0.5)
    rid = fake.messages(AddRequest)[-1].request_id
    wait_for(lambda: rid in fake.aborted_ids())


def test_disconnect_mid_stream_aborts(url: str, fake: FakeScheduler):
    fake.step_s = 0.2
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "x", "stream": True}) as r:
            next(r.iter_lines())
        rid = fake.messages(AddRequest)[-1].request_id
        wait_for(lambda: rid in fake.aborted_ids())
    finally:
        fake.step_s = 0.01


def test_stop_string_aborts_in_the_engine(url: str, fake: FakeScheduler):
    out = client(url).completions.create(model="x", prompt="x", stop=["!"])
    assert (out.choices[0].text, out.choices[0].finish_reason) == ("Hello there", "stop")
    assert fake.messages(AddRequest)[-1].request_id in fake.aborted_ids()


def test_slots_and_metrics(url: str):
    slots = httpx.get(f"{url}/slots").json()
    assert [s["id"] for s in slots] == [0, 1] and not slots[0]["is_processing"]
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "llamacpp:requests_processing 0.0" in metrics.text


# ----------------------------------------------------------------------------- other configurations


def test_loading_until_engine_info(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path))
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids, ready=False) as fake, \
            run_frontend(cfg, wait_ready=False) as url:
        r = httpx.get(f"{url}/health")
        assert (r.status_code, r.json()) == (503, {"status": "loading"})
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert httpx.post(f"{url}/tokenize", json={"content": "hi"}).status_code == 200  # needs no engine
        fake.set_ready()
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}


def test_a_large_tokenization_leaves_the_worker_answering_others(tmp_path, reply_ids):
    # Tokenizing megabytes takes seconds (~15 s here): on the event loop it froze every client of
    # the worker (and the scheduler, missing its heartbeats for 3 s, dropped their requests).
    cfg = frontend_config(str(tmp_path), http_workers=1)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        done = {}
        big = threading.Thread(target=lambda: done.update(big=(httpx.post(
            f"{url}/tokenize", json={"content": "word " * 2_000_000}, timeout=300), time.monotonic())))
        big.start()
        time.sleep(3.0)  # the body is in and being tokenized
        sent = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=300).status_code == 200
        answered = time.monotonic()
        big.join()
        response, finished = done["big"]
        assert response.status_code == 200
        assert answered - sent < (finished - sent) / 2  # not after the tokenization


@pytest.mark.parametrize("metrics_no_auth", [False, True])
def test_api_keys(tmp_path, reply_ids, metrics_no_auth: bool):
    cfg = frontend_config(str(tmp_path), api_keys=["k1", "k2"], metrics=True, metrics_no_auth=metrics_no_auth,
                          aliases=["first", "second"], tags=["small"])
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "Bearer k2"}).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers={"x-api-key": "k1"}).status_code == 200
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "k1"}).status_code == 200  # as llama-server
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "Basic k1"}).status_code == 401
        # without the key, nothing tells a route from none (as llama-server); with it, 404 and 405
        assert httpx.get(f"{url}/no/such/route").status_code == 401
        assert httpx.get(f"{url}/v1/chat/completions").status_code == 401
        assert httpx.get(f"{url}/no/such/route", headers={"x-api-key": "k1"}).status_code == 404
        assert httpx.get(f"{url}/v1/chat/completions", headers={"x-api-key": "k1"}).status_code == 405
        assert httpx.get(f"{url}/metrics").status_code == (200 if metrics_no_auth else 401)
        assert httpx.get(f"{url}/").status_code == 200  # the web UI loads, then asks for a key
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]  # served without a key, like /health
        assert "security" in paths["/v1/models"]["get"]
        assert ("security" in paths["/metrics"]["get"]) != metrics_no_auth
        with pytest.raises(openai.AuthenticationError):
            client(url).models.list()
        models = openai.OpenAI(base_url=f"{url}/v1", api_key="k1", _strict_response_validation=True).models.list()
        assert [m.id for m in models.data] == [cfg.model_alias] == ["first"]
        (listed,) = httpx.get(f"{url}/v1/models", headers={"x-api-key": "k1"}).json()["data"]
        assert listed["aliases"] == ["first", "second"] and listed["tags"] == ["small"]  # llama-server's fields
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="k1", _strict_response_validation=True)
        for name in ("first", "second"):  # OpenAI's retrieve, by the id or an alias
            assert sdk.models.retrieve(name).id == "first"
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("gpt-4o")


def test_a_path_outside_the_api_prefix_needs_the_key_to_learn_so(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path), api_keys=["k1"], api_prefix="/llm")
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and "/llm" not in r.text
        assert httpx.get(f"{url}/v1/models", headers={"x-api-key": "k1"}).status_code == 404
        assert httpx.get(f"{url}/llm/v1/models", headers={"x-api-key": "k1"}).status_code == 200


def test_path_files_need_the_api_key_except_the_web_uis_paths(tmp_path, reply_ids):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>mine</h1>")
    (site / "notes.txt").write_text("private")
    cfg = frontend_config(str(tmp_path), api_keys=["k1"], static_path=str(site))
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        assert httpx.get(f"{url}/").text == "<h1>mine</h1>"  # as llama-server: its UI's names are public
        assert httpx.get(f"{url}/notes.txt").status_code == 401
        assert httpx.get(f"{url}/notes.txt", headers={"authorization": "Bearer k1"}).text == "private"


def test_operator_endpoints_off_answer_501_and_props_changes_nothing_silently(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path), slots=False, props=True, webui=False)  # and no --metrics
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        for path in ("/metrics", "/slots"):
            r = httpx.get(f"{url}{path}")
            assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error", path
        assert httpx.get(f"{url}/").status_code == 404  # --no-webui
        assert httpx.post(f"{url}/props", json={}).json() == {"success": True}
        assert httpx.post(f"{url}/props", content=b"").json() == {"success": True}
        r = httpx.post(f"{url}/props", json={"n_ctx": 5})  # llama-server would ignore it; we say so
        assert r.status_code == 400 and r.json()["error"]["param"] == "n_ctx"
        assert httpx.post(f"{url}/props", json=[1]).status_code == 400
        props = httpx.get(f"{url}/props").json()
        assert (props["endpoint_slots"], props["endpoint_props"], props["endpoint_metrics"], props["ui"]) == (
            False, True, False, False)


def test_post_props_needs_the_props_flag_and_slots_can_fail_when_all_are_busy(url: str, fake: FakeScheduler):
    r = httpx.post(f"{url}/props", json={})
    assert r.status_code == 501 and "--props" in r.json()["error"]["message"]
    assert httpx.get(f"{url}/slots", params={"fail_on_no_slot": "1"}).status_code == 200
    fake.step_s = 0.2
    try:
        with httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "x", "stream": True}) as first, \
                httpx.stream("POST", f"{url}/v1/completions", json={"prompt": "y", "stream": True}) as second:
            lines = [first.iter_lines(), second.iter_lines()]  # kept: a dropped line iterator closes its stream
            for stream_lines in lines:
                next(stream_lines)
            wait_for(lambda: all(s["is_processing"] for s in httpx.get(f"{url}/slots").json()))
            r = httpx.get(f"{url}/slots", params={"fail_on_no_slot": "1"})
            assert r.status_code == 503 and r.json()["error"]["message"] == "no slot available"
    finally:
        fake.step_s = 0.01


def test_the_web_ui_is_served_with_its_files_and_a_strict_policy(url: str):
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for asset in ("/webui/app.js", "/webui/markdown.js", "/webui/style.css"):
        assert asset in page.text
        r = httpx.get(f"{url}{asset}")
        assert r.status_code == 200 and r.text, asset
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere


def test_two_http_workers_each_say_hello(tmp_path, reply_ids):
    cfg = frontend_config(str(tmp_path), http_workers=2)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids) as fake, run_frontend(cfg) as url:
        wait_for(lambda: len(fake.messages(Hello)) == 2, timeout_s=30)
        peers = {m.peer for m in fake.messages(Hello)}
        assert len(peers) == 2
        for _ in range(4):
            assert client(url).completions.create(model="x", prompt="x", max_tokens=2).choices[0].text


def test_https_with_a_self_signed_certificate(tmp_path, reply_ids):
    certfile, keyfile = self_signed_cert(str(tmp_path))
    cfg = frontend_config(str(tmp_path), ssl_certfile=certfile, ssl_keyfile=keyfile)
    with FakeScheduler(cfg.scheduler_endpoint, reply_ids), run_frontend(cfg) as url:
        assert url.startswith("https://")
        trust = ssl.create_default_context(cafile=certfile)
        assert httpx.get(f"{url}/health", verify=trust).json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError):  # not trusted by default
            httpx.get(f"{url}/health")
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", http_client=httpx.Client(verify=trust))
        assert sdk.completions.create(model="x", prompt="x", max_tokens=2).choices[0].text == "Hello there"
