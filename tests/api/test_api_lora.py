"""LoRA adapters through HTTP: the flags, GET/POST /lora-adapters, a request's ``lora`` on every
completion endpoint, 400s naming the field, and start-up failures with a clear exit code.

The model is a base model and the adapters are random (tests/lora_adapter.py): the tests compare
runs with and without an adapter, never what the model says.
"""

from __future__ import annotations

import argparse

import httpx
import pytest
from conftest import start_server

from ggserve.cli import config_from_args
from ggserve.flags.parser import serve_parser
from ggserve.config import ScaledFile
from ggserve.flags.env import apply_env_defaults

ON = [{"id": 0, "scale": 1.0}]
OFF = [{"id": 0, "scale": 0.0}]  # every adapter at 0: the plain model


@pytest.fixture(scope="module")
def server(lora_adapters):
    with start_server("-np", "2", "-c", "1024", "--lora", lora_adapters["a"],
                      "--lora-scaled", f"{lora_adapters['b']}:0.5") as handle:
        yield handle


def adapters(server) -> list[dict]:
    r = httpx.get(f"{server.base_url}/lora-adapters", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_get_lists_the_adapters_with_llama_servers_fields(server, lora_adapters):
    assert adapters(server) == [
        {"id": 0, "path": lora_adapters["a"], "scale": 1.0, "task_name": "style", "prompt_prefix": ""},
        {"id": 1, "path": lora_adapters["b"], "scale": 0.5, "task_name": "", "prompt_prefix": ""},
    ]


def test_post_sets_the_global_scales_and_unlisted_adapters_go_to_zero(server):
    url = f"{server.base_url}/lora-adapters"
    try:
        r = httpx.post(url, json=[{"id": 1, "scale": 0.25}], timeout=30)
        assert r.status_code == 200 and r.json() == {"success": True}
        assert [a["scale"] for a in adapters(server)] == [0.0, 0.25]
        for bad in ({"id": 0, "scale": 1}, [{"id": 2, "scale": 1}], [{"id": 0, "scale": "high"}], [{"id": 0}],
                    [{"id": 0, "scale": 1e39}]):  # a double, but infinite as llama.cpp's float32
            r = httpx.post(url, json=bad, timeout=30)
            assert r.status_code == 400, (bad, r.text)
        assert [a["scale"] for a in adapters(server)] == [0.0, 0.25]  # a refused change changes nothing
    finally:
        httpx.post(url, json=[{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.5}], timeout=30)


def _top(server, path: str, lora: list[dict], **body) -> object:
    """The top alternatives of a greedy 3-token answer, as the endpoint reports them."""
    body |= {"temperature": 0, "lora": lora, "cache_prompt": False}
    r = httpx.post(f"{server.base_url}{path}", json=body, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    if path == "/completion":
        return data["completion_probabilities"]
    choice = data["choices"][0]
    return choice["logprobs"]["content"] if path == "/v1/chat/completions" else choice["logprobs"]["top_logprobs"]


@pytest.mark.parametrize("path, body", [
    ("/completion", {"prompt": "The capital of France is", "n_predict": 3, "n_probs": 3}),
    ("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 3, "logprobs": 3}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "logprobs": True,
                              "top_logprobs": 3}),
])
def test_a_requests_lora_changes_its_answer(server, path, body):
    assert _top(server, path, ON, **body) != _top(server, path, OFF, **body)
    assert _top(server, path, OFF, **body) == _top(server, path, OFF, **body)  # deterministic


def test_generation_settings_show_the_requests_lora(server):
    r = httpx.post(f"{server.base_url}/completion", timeout=60, json={"prompt": "Hi", "n_predict": 1, "lora": ON})
    assert r.status_code == 200 and r.json()["generation_settings"]["lora"] == ON, r.text


@pytest.mark.parametrize("lora, param", [
    ([{"id": 2, "scale": 1.0}], "lora"),
    ([{"id": -1, "scale": 1.0}], "lora"),
    ([{"id": 0, "scale": "high"}], "lora[0].scale"),
    ([{"id": 0}], "lora[0].scale"),  # the missing field
    ({"id": 0, "scale": 1.0}, "lora"),
    ("0:1", "lora"),
])
def test_a_bad_lora_is_a_400_naming_the_field(server, lora, param):
    for path, body in [("/completion", {"prompt": "Hi", "n_predict": 1}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})]:
        r = httpx.post(f"{server.base_url}{path}", json=body | {"lora": lora}, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.text


def test_the_prefix_cache_is_not_reused_under_another_adapter_set(server):
    prompt = "Our store opens at nine and closes at six on weekdays. " * 4

    def cached(lora: list[dict]) -> int:
        r = httpx.post(f"{server.base_url}/v1/completions", timeout=120,
                       json={"prompt": prompt, "max_tokens": 1, "temperature": 0, "lora": lora})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    # sets no other test uses, so no slot holds even a BOS token computed with them
    first, second = [{"id": 0, "scale": 0.75}], [{"id": 1, "scale": 0.75}]
    assert cached(first) == 0
    assert cached(first) > 0
    assert cached(second) == 0


def test_lora_flags_and_environment_variables_map_onto_the_config(lora_adapters):
    parser = argparse.ArgumentParser()
    serve = serve_parser(parser.add_subparsers())
    apply_env_defaults(serve, {"GGSERVE_LORA_SCALED": f"{lora_adapters['b']}:-0.5"})
    args = parser.parse_args(["serve", "--lora", f"{lora_adapters['a']},{lora_adapters['b']}",
                              "--lora-init-without-apply"])
    cfg = config_from_args(args)
    assert cfg.lora == [ScaledFile(lora_adapters["b"], -0.5), ScaledFile(lora_adapters["a"]), ScaledFile(lora_adapters["b"])]
    assert cfg.lora_scales == [0.0, 0.0, 0.0]
    for bad in (["--lora-scaled", "x.gguf"], ["--lora-scaled", "x.gguf:big"], ["--lora", "/nonexistent.gguf"]):
        with pytest.raises(SystemExit) as exc:
            config_from_args(parser.parse_args(["serve", *bad]))
        assert exc.value.code == 2


@pytest.mark.parametrize("adapter, reason", [("wrong_shape", "wrong base model"), ("base_model", "adapter")])
def test_an_adapter_that_does_not_load_fails_start_up_with_a_message(lora_adapters, adapter, reason):
    from ggserve.models.resolve import resolve_model

    path = resolve_model(None) if adapter == "base_model" else lora_adapters[adapter]
    with start_server("-np", "1", "-c", "256", "--lora", path, ready=False) as server:
        assert server.proc.wait(180) == 1
        log = server.log()
        assert f"LoRA adapter {path} failed to load" in log and reason in log, log
