"""llama-server's server-wide output defaults, end to end: ``--ignore-eos``, ``-r``, ``-l`` and
``--grammar`` apply to requests that leave the field out, and a request's own field wins;
``-sp`` writes control tokens out, and ``--skip-chat-parsing`` leaves reasoning in the content.

The server bans the digits 0-8 and constrains output to digits, so whatever the base model
would say, the text it must write is nines: that is what is asserted.
"""

from __future__ import annotations

import httpx
import pytest
from conftest import start_server

DIGITS = "root ::= [0-9]+"


@pytest.fixture(scope="module")
def digit_ids(tokenizer) -> dict[str, int]:
    ids = {d: tokenizer.tokenize(d, add_special=False, parse_special=False) for d in "0123456789"}
    assert all(len(t) == 1 for t in ids.values())  # Gemma's digits are single tokens
    return {d: t[0] for d, t in ids.items()}


@pytest.fixture(scope="module")
def server(digit_ids):
    bans = [arg for d in "012345678" for arg in ("-l", f"{digit_ids[d]}-inf")]
    with start_server("--ignore-eos", "--grammar", DIGITS, "-r", "ba", *bans) as handle:
        yield handle


def complete(server, **body) -> dict:
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": "Count:", "n_predict": 6, "temperature": 0, **body},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_requests_that_set_nothing_take_the_servers_grammar_bias_and_ignore_eos(server) -> None:
    out = complete(server)
    assert out["content"] and set(out["content"]) == {"9"}
    assert out["tokens_predicted"] == 6 and out["stop_type"] == "limit"
    assert out["generation_settings"]["ignore_eos"] is True


def test_a_requests_own_logit_bias_replaces_the_servers(server, digit_ids) -> None:
    out = complete(server, logit_bias=[[digit_ids["9"], False]])
    assert out["content"] and out["content"].isdigit() and "9" not in out["content"]


def test_a_requests_own_grammar_replaces_the_servers(server) -> None:
    out = complete(server, grammar='root ::= "ab"+', stop=["zz"])
    assert out["content"].startswith("ab") and set(out["content"]) == {"a", "b"}


def test_the_servers_stop_strings_apply_to_requests_that_give_none(server) -> None:
    for stop in ({}, {"stop": []}, {"stop": [""]}):
        out = complete(server, grammar='root ::= "ab"+', **stop)
        assert (out["content"], out["stop_type"], out["stopping_word"]) == ("a", "word", "ba")
        assert out["generation_settings"]["stop"] == ["ba"]


def test_a_request_may_turn_ignore_eos_off(server) -> None:
    out = complete(server, ignore_eos=False)
    assert out["generation_settings"]["ignore_eos"] is False
    assert out["content"] and set(out["content"]) == {"9"} and out["tokens_predicted"] <= 6


def test_openai_completions_take_the_servers_defaults_too(server) -> None:
    r = httpx.post(f"{server.base_url}/v1/completions",
                   json={"prompt": "Count:", "max_tokens": 5, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert set(choice["text"]) == {"9"} and choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 5


def test_props_show_the_servers_ignore_eos(server) -> None:
    params = httpx.get(f"{server.base_url}/props").json()["default_generation_settings"]["params"]
    assert params["ignore_eos"] is True


def test_a_server_grammar_llama_cpp_cannot_parse_fails_start_up_with_a_message() -> None:
    with start_server("--grammar", "root ::= missing-rule", ready=False) as handle:
        assert handle.proc.wait(180) != 0
        log = handle.log()
        assert "the server's grammar (--grammar / --json-schema)" in log, log


# A grammar can force a control token that does not end the generation (llama.cpp's grammars
# allow an end-of-generation token only once they are complete); then one ends it, which is not
# part of the reply (llama-server writes it too with -sp: a documented difference).
@pytest.fixture(scope="module")
def start_of_turn(tokenizer) -> int:
    [token] = tokenizer.tokenize("<start_of_turn>", add_special=False, parse_special=True)
    return token


def test_control_tokens_are_left_out_of_replies_without_special(server, start_of_turn) -> None:
    out = complete(server, grammar=f'root ::= "a" <[{start_of_turn}]>', ignore_eos=False, n_probs=1)
    assert out["content"] == "a" and out["stop_type"] == "eos"
    assert [p["token"] for p in out["completion_probabilities"]] == ["a", ""]


def test_special_writes_control_tokens_into_content_and_logprobs_and_skip_chat_parsing_keeps_all_in_content(
        start_of_turn) -> None:
    with start_server("-sp", "--skip-chat-parsing", "-np", "1", "-c", "512") as handle:
        out = complete(handle, grammar=f'root ::= "a" <[{start_of_turn}]>', n_probs=1)
        assert out["content"] == "a<start_of_turn>" and out["stop_type"] == "eos"
        assert [p["token"] for p in out["completion_probabilities"]] == ["a", "<start_of_turn>"]
        chat = httpx.post(f"{handle.base_url}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0,
            "grammar": f'root ::= "b" <[{start_of_turn}]>'}).json()
        assert chat["choices"][0]["message"]["content"] == "b<start_of_turn>"
        assert chat["choices"][0]["finish_reason"] == "stop"
        think = httpx.post(f"{handle.base_url}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "temperature": 0,
            "grammar": 'root ::= "<think>" [a-z]{1,4} "</think>" [a-z]{1,4}'}).json()["choices"][0]["message"]
        assert think["content"].startswith("<think>") and "</think>" in think["content"]
        assert not think.get("reasoning_content")
