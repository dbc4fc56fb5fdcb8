"""Operating a real server with two HTTP workers and an API key: /metrics scraped before and
after requests (every llama-server series and ours moving, histogram counts equal to the
requests, whichever worker answers the scrape), /slots during long streams, /props, and the
JSON request log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerHandle, start_server
from prometheus_client.parser import text_string_to_metric_families

KEY = "ops-key"
AUTH = {"authorization": f"Bearer {KEY}"}
TIMEOUT_S = 120
N_CONCURRENT = 6
MAX_TOKENS = 6

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[tuple[ServerHandle, str]]:
    log_file = str(tmp_path_factory.mktemp("logs") / "ggserve.jsonl")
    with start_server("--http-workers", "2", "-np", "2", "--api-key", KEY, "--log-format", "json",
                      "--log-file", log_file) as handle:
        yield handle, log_file


def get(server: ServerHandle, path: str, **kw: object) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", headers=AUTH, timeout=TIMEOUT_S, **kw)


def scrape(server: ServerHandle) -> Samples:
    r = get(server, "/metrics")
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def complete(server: ServerHandle, prompt: str, stream: bool = False) -> dict:
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True}
    if not stream:
        r = httpx.post(f"{server.base_url}/v1/completions", json=body, headers=AUTH, timeout=TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()["usage"]
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    usage = None
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=AUTH, timeout=TIMEOUT_S) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    assert usage is not None
    return usage


def test_metrics_need_the_key(ops):
    server, _ = ops
    r = httpx.get(f"{server.base_url}/metrics", timeout=TIMEOUT_S)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = get(server, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert int(r.headers["process-start-time-unix"]) > 0
    # typed and named as llama-server writes it (its suite parses the TYPE lines)
    assert "# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max " in r.text


def test_every_series_moves_and_histograms_count_the_requests(ops):
    server, _ = ops
    before = scrape(server)
    shared = "The quick brown fox jumps over the lazy dog. " * 6
    usages = [complete(server, shared + "First."), complete(server, shared + "Second.", stream=True)]
    assert usages[1]["prompt_tokens_details"]["cached_tokens"] > 0  # the prefix cache served it
    threads = [threading.Thread(target=lambda i=i: usages.append(complete(server, f"Request {i}: count", i % 2 == 0)))
               for i in range(N_CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = 2 + N_CONCURRENT
    assert len(usages) == n
    # Any worker may answer a scrape: each must sum the histograms of both.
    scrapes = [scrape(server) for _ in range(4)]
    after = scrapes[0]
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    evaluated = prompt_tokens - sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    assert generated == n * MAX_TOKENS

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("llamacpp:prompt_tokens_total") == evaluated
    assert delta("llamacpp:prompt_tokens_cached_total") == prompt_tokens - evaluated > 0
    assert delta("llamacpp:tokens_predicted_total") == generated
    for name in ("llamacpp:prompt_seconds_total", "llamacpp:tokens_predicted_seconds_total",
                 "llamacpp:n_decode_total"):
        assert delta(name) > 0, name
    # prometheus_client's parser names a counter's sample NAME_total
    assert value(after, "llamacpp:n_tokens_max_total") >= max(u["total_tokens"] for u in usages) - 1
    # the throughput gauges average over the window since the previous scrape (llama-server's)
    assert value(after, "llamacpp:prompt_tokens_seconds") > 0
    assert value(after, "llamacpp:predicted_tokens_seconds") > 0
    assert value(scrapes[-1], "llamacpp:prompt_tokens_seconds") == 0  # nothing ran since the last scrape
    assert value(after, "llamacpp:requests_processing") == value(after, "llamacpp:requests_deferred") == 0
    assert 1 <= value(after, "llamacpp:n_busy_slots_per_decode") <= 2
    for samples in scrapes:
        for histogram in ("e2e_request_latency_seconds", "time_to_first_token_seconds", "request_queue_time_seconds",
                          "time_per_output_token_seconds", "request_prompt_tokens", "request_generation_tokens"):
            name = f"ggserve:{histogram}_count"
            assert value(samples, name) - value(before, name) == n, histogram
        assert value(samples, "ggserve:request_generation_tokens_sum") - value(
            before, "ggserve:request_generation_tokens_sum") == generated
        assert value(samples, "ggserve:request_prompt_tokens_sum") - value(
            before, "ggserve:request_prompt_tokens_sum") == prompt_tokens
    assert delta("ggserve:requests_finished_total") == n
    assert delta("ggserve:prefix_cache_hit_tokens_total", executor="0") == prompt_tokens - evaluated
    assert delta("ggserve:steps_total", executor="0") == delta("llamacpp:n_decode_total")
    assert value(after, "ggserve:slots_total", executor="0") == 2
    assert value(after, "ggserve:executor_ready", executor="0") == 1
    assert value(after, "ggserve:kv_cache_tokens", executor="0") > 0  # the prefix cache holds them
    assert 0 < value(after, "ggserve:kv_cache_usage_ratio", executor="0") <= 1
    for process in ("scheduler", "executor-0", "frontend"):
        assert value(after, "ggserve:restarts_total", process=process) == 0


def test_slots_show_busy_slots_during_long_streams(ops):
    server, _ = ops
    assert get(server, "/slots", params={"fail_on_no_slot": 1}).status_code == 200
    body = {"prompt": "Tell a long story.", "max_tokens": 400, "temperature": 0.5, "top_k": 12, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=AUTH, timeout=TIMEOUT_S) as a, \
            httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=AUTH,
                         timeout=TIMEOUT_S) as b:
        readers = [stream.iter_lines() for stream in (a, b)]  # kept: a dropped iterator closes its stream
        for lines in readers:
            while not next(lines).startswith("data: {"):
                pass
        slots = get(server, "/slots").json()
        assert len(slots) == 2 and all(s["is_processing"] for s in slots)
        for slot in slots:
            assert (slot["n_ctx"], slot["id_executor"], slot["speculative"]) == (2048, 0, False)
            assert slot["id_task"] and slot["n_prompt_tokens"] > 0
            assert slot["params"]["temperature"] == 0.5 and slot["params"]["top_k"] == 12
            assert slot["params"]["n_predict"] == 400 and slot["params"]["ignore_eos"] is True
            (next_token,) = slot["next_token"]
            assert next_token["has_next_token"] and next_token["n_decoded"] >= 1
            assert next_token["n_remain"] == 400 - next_token["n_decoded"]
        r = get(server, "/slots", params={"fail_on_no_slot": 1})
        assert r.status_code == 503 and r.json()["error"]["message"] == "no slot available"
    # The streams were closed: their requests are aborted and the slots freed.
    for _ in range(100):
        if not any(s["is_processing"] for s in get(server, "/slots").json()):
            break
        threading.Event().wait(0.1)
    assert get(server, "/slots", params={"fail_on_no_slot": 1}).status_code == 200


def test_props_has_llama_server_fields(ops):
    server, _ = ops
    props = get(server, "/props").json()
    settings = props["default_generation_settings"]
    assert settings["n_ctx"] == 2048 and props["total_slots"] == 2  # a request may use all of -c
    assert settings["params"]["temperature"] == 0.8 and settings["params"]["seed"] == 0xFFFFFFFF
    assert settings["params"]["n_predict"] == -1
    assert props["model_path"].endswith(".gguf") and props["model_ftype"]
    caps = props["chat_template_caps"]
    assert caps["supports_system_role"] and caps["supports_string_content"]  # ChatML, the fallback
    assert (props["endpoint_metrics"], props["endpoint_slots"], props["endpoint_props"]) == (True, True, True)
    assert props["modalities"] == {"vision": False, "video": False, "audio": False}
    assert props["build_info"].startswith("ggserve ")
    assert httpx.post(f"{server.base_url}/props", json={}, headers=AUTH).json() == {"success": True}


def test_json_log_has_one_line_per_request(ops):
    server, log_file = ops
    usage = complete(server, "Log me")
    assert httpx.get(f"{server.base_url}/v1/models", timeout=TIMEOUT_S).status_code == 401
    with open(log_file, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]  # every line is JSON
    assert all(json.loads(line) for line in server.log().splitlines() if line.strip())  # granian's too, if any
    assert {"scheduler", "executor-0", "frontend"} <= {e["process"] for e in entries}
    requests = [e for e in entries if e["logger"] == "ggserve.requests" and e.get("endpoint") == "/v1/completions"]
    last = requests[-1]
    assert last["status"] == 200 and last["id"]
    assert (last["prompt_tokens"], last["generated_tokens"]) == (usage["prompt_tokens"], MAX_TOKENS)
    assert last["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
    assert 0 < last["ttft_ms"] <= last["total_ms"]
    assert last["executor"] == "0" and last["slot"] in ("0", "1")
    refused = [e for e in entries if e["logger"] == "ggserve.requests" and e.get("endpoint") == "/v1/models"]
    assert refused[-1]["status"] == 401 and refused[-1]["error"] == "invalid or missing API key"
