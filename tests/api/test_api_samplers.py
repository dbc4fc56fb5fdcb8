"""llama.cpp's samplers through the API: each changes the outcome the way it should."""

from __future__ import annotations

import httpx
import pytest

PROMPT = "The days of the week are Monday, Tuesday,"
REPEATING = "The cat sat on the mat. " * 8  # greedy goes on repeating it
LETTERS = "a b c d a b c d a b c d a b c d a b c d"  # greedy continues with " a"


def run(server, **body) -> dict:
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": PROMPT, "return_tokens": True} | body,
                   timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def greedy(server, n: int = 8, **body) -> dict:
    return run(server, temperature=0, n_predict=n, ignore_eos=True, **body)


def test_banned_tokens_never_appear_in_every_logit_bias_form(server):
    plain = greedy(server)
    first = plain["tokens"][0]
    for bias in ({str(first): False}, [[first, False]], {str(first): -1e9}):
        out = greedy(server, logit_bias=bias)
        assert first not in out["tokens"], bias
    text = httpx.post(f"{server.base_url}/detokenize", json={"tokens": [first]}).json()["content"]
    by_text = greedy(server, logit_bias=[[text, False]])
    assert first not in by_text["tokens"]
    boosted = greedy(server, logit_bias=[[first, 100.0]])
    assert boosted["tokens"] == [first] * 8  # a huge bias wins every step


def test_ignore_eos_bans_end_of_generation_tokens(server):
    eog = httpx.post(f"{server.base_url}/tokenize", json={"content": "<eos><end_of_turn>", "parse_special": True}
                     ).json()["tokens"]
    out = run(server, prompt="The end.", n_predict=24, ignore_eos=True, temperature=1.5, seed=1)
    assert out["tokens_predicted"] == 24 and not set(eog) & set(out["tokens"])
    # The bans are part of the settings, in llama-server's shape (a -inf bias is JSON's null).
    assert {entry["token"] for entry in out["generation_settings"]["logit_bias"]} >= set(eog)
    assert all(entry["bias"] is None for entry in out["generation_settings"]["logit_bias"])
    assert run(server, prompt="The end.", n_predict=1)["generation_settings"]["logit_bias"] == []
    boosted = run(server, prompt="The end.", n_predict=1, logit_bias=[[eog[0], 2.5]])
    assert boosted["generation_settings"]["logit_bias"] == [{"bias": 2.5, "token": eog[0]}]


@pytest.mark.parametrize("version", [1, 2])
def test_mirostat_is_reproducible_at_a_seed(server, version):
    body = {"n_predict": 12, "ignore_eos": True, "temperature": 1.0, "mirostat": version, "mirostat_tau": 3.0}
    a, b = run(server, seed=11, **body), run(server, seed=11, **body)
    assert a["tokens"] == b["tokens"]
    assert a["generation_settings"]["mirostat"] == version


def test_dry_reduces_a_repeated_ngram(server):
    plain = run(server, prompt=REPEATING, temperature=0, n_predict=24, ignore_eos=True)
    dry = run(server, prompt=REPEATING, temperature=0, n_predict=24, ignore_eos=True, dry_multiplier=2.0,
              dry_allowed_length=2)
    assert plain["content"].count("sat on the mat") >= 3
    assert dry["content"].count("sat on the mat") < plain["content"].count("sat on the mat")


def test_penalties_see_the_prompt(server):
    """llama-server feeds the prompt to the penalty sampler: a repeat penalty then changes the
    very first token (a token of the prompt becomes less likely)."""
    plain = run(server, prompt=LETTERS, temperature=0, n_predict=1)
    penalised = run(server, prompt=LETTERS, temperature=0, n_predict=1, repeat_penalty=3.0, repeat_last_n=64)
    assert plain["tokens"] != penalised["tokens"]


def test_samplers_order_decides_the_chain(server):
    base = greedy(server)
    # Only top-k (k=1) before the pick: temperature 5 is not in the chain, so the output is greedy.
    for samplers in (["top_k"], "k", ["Top-K"]):
        out = run(server, n_predict=8, ignore_eos=True, temperature=5.0, top_k=1, samplers=samplers, seed=4)
        assert out["tokens"] == base["tokens"], samplers
        assert out["generation_settings"]["samplers"] == ["top_k"]


@pytest.mark.parametrize("body", [{"samplers": ["infill"]}, {"samplers": ["infill", "top_k"]},
                                  {"samplers": ["top_k", "infill"], "top_k": 0}])
def test_the_infill_sampler_needs_top_k_before_it(server, body):
    """It compares every pair of its candidates: over the whole vocabulary one step would stall
    the executor (and every request on it) for hours."""
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": PROMPT, "n_predict": 2} | body, timeout=60)
    assert r.status_code == 400 and "top_k" in r.json()["error"]["message"], r.text
    out = run(server, n_predict=4, ignore_eos=True, samplers=["top_k", "infill", "temperature"], top_k=40, seed=1)
    assert len(out["tokens"]) == 4


def test_top_n_sigma_narrows_and_min_keep_widens(server):
    base = greedy(server)
    hot = {"n_predict": 8, "ignore_eos": True, "temperature": 3.0, "top_k": 0, "top_p": 1.0}
    narrow = run(server, **hot, min_p=0.0, top_n_sigma=0.001, seed=5)
    assert narrow["tokens"] == base["tokens"]  # only the top logit is within 0.001 sigma of itself
    only_top = run(server, **hot, min_p=1.0, seed=5)
    assert only_top["tokens"] == base["tokens"]  # min_p 1: the most likely token alone
    kept = [run(server, **hot, min_p=1.0, min_keep=50, seed=s)["tokens"] for s in range(3)]
    assert any(k != base["tokens"] for k in kept)  # min_keep 50: min_p keeps 50 candidates


def test_xtc_removes_the_top_choices(server):
    base = greedy(server, n=8)
    xtc = greedy(server, n=8, xtc_probability=1.0, xtc_threshold=0.05)
    assert xtc["tokens"] != base["tokens"]


def test_dynamic_temperature_and_typical_are_reproducible(server):
    body = {"n_predict": 10, "ignore_eos": True, "temperature": 1.0, "dynatemp_range": 0.8, "typical_p": 0.7,
            "seed": 21}
    assert run(server, **body)["tokens"] == run(server, **body)["tokens"]
