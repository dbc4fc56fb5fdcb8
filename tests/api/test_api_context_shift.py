"""Context shift through the HTTP API, as llama-server's: ``--context-shift``, ``n_keep`` and
``n_discard`` on every completion endpoint, ``truncated`` in /completion's response, a prompt
that fills the context refused, and a model whose cache cannot shift running without it.

The tiny llama model (tests/tiny_models.py) can shift; the embedded Gemma 3 cannot where its
sliding-window cache is smaller than the context. Small contexts keep the servers quick.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import start_server
from tiny_models import tiny_llama

CTX = 64
PROMPT = "Once upon a time, in a small village by the sea,"
SMALL = ("-np", "2", "-c", "256", "--ctx-per-request", str(CTX), "-t", "1")


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=120)


@pytest.fixture(scope="module")
def server():
    with start_server("-m", tiny_llama(), *SMALL, "--context-shift") as handle:
        yield handle


def test_completion_goes_past_the_context_and_says_it_was_truncated(server):
    r = post(server, "/completion", {"prompt": PROMPT, "n_predict": 3 * CTX, "temperature": 0, "ignore_eos": True,
                                     "n_keep": 4, "n_discard": 10})
    out = r.json()
    assert r.status_code == 200, out
    assert out["tokens_predicted"] == 3 * CTX and out["stop_type"] == "limit" and out["truncated"] is True
    assert out["generation_settings"]["n_keep"] == 4 and out["generation_settings"]["n_discard"] == 10
    short = post(server, "/completion", {"prompt": PROMPT, "n_predict": 4, "ignore_eos": True}).json()
    assert short["truncated"] is False and short["generation_settings"]["n_keep"] == 0  # the server's --keep


def test_openai_endpoints_take_n_keep_and_go_past_the_context(server):
    completion = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 2 * CTX, "ignore_eos": True,
                                                  "n_keep": -1}).json()
    assert completion["usage"]["completion_tokens"] == 2 * CTX
    assert completion["choices"][0]["finish_reason"] == "length"
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                 "max_tokens": 2 * CTX, "ignore_eos": True, "n_keep": 2}).json()
    assert chat["usage"]["completion_tokens"] == 2 * CTX


def test_a_prompt_that_fills_the_context_is_refused(server):
    r = post(server, "/completion", {"prompt": [2] + [1000] * (CTX - 1), "n_predict": 4})
    assert r.status_code == 400 and r.json()["error"]["type"] == "exceed_context_size_error"
    r = post(server, "/completion", {"prompt": PROMPT, "n_keep": -2})
    assert r.status_code == 400 and "n_keep" in r.text


def test_without_context_shift_or_where_the_cache_cannot_shift_generation_stops_at_the_context():
    # The embedded Gemma 3's sliding-window cache is smaller than a 2048-cell context (not at 256:
    # then both caches have every cell and llama.cpp can shift them).
    gemma = ["-c", "2048", "--context-shift", "--cache-reuse", "64"]
    for model in (["-m", tiny_llama(), "--no-context-shift"], gemma):
        with start_server(*SMALL, *model) as handle:
            for limit in ({"n_predict": 3 * CTX}, {}):  # past the context (no error, as llama-server), none
                out = post(handle, "/completion", {"prompt": PROMPT, "ignore_eos": True, "n_keep": 4, **limit}).json()
                assert out["stop_type"] == "limit" and out["truncated"] is True
                assert out["tokens_evaluated"] + out["tokens_predicted"] == CTX
            if model is gemma:
                assert "context shift is not supported by this model's KV cache" in handle.log()
                assert "cache reuse is not supported by this model's KV cache" in handle.log()


def test_n_cache_reuse_moves_cached_chunks_into_place(server):
    def tokens(text: str) -> list[int]:
        return post(server, "/tokenize", {"content": text}).json()["tokens"]

    a, b, c = tokens(" The harbour was quiet that morning,"), tokens(" apart from the gulls,"), tokens(
        " and the boats lay still on water as flat as glass.")
    post(server, "/completion", {"prompt": [2, *a, *b, *c], "n_predict": 2})
    edited = {"prompt": [2, *a, *c, *tokens(" Then")], "n_predict": 2}
    assert post(server, "/completion", edited | {"n_cache_reuse": 8}).json()["tokens_cached"] == 1 + len(a) + len(c)
    assert post(server, "/completion", edited).json()["tokens_cached"] == 1 + len(a)  # --cache-reuse 0: off
