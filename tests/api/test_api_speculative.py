"""Speculative decoding through the HTTP API (``--spec-type``): llama-server's ``timings.draft_n``
and ``draft_n_accepted``, its ``speculative.*`` request fields, its ``spec_decode_*`` metrics,
and /slots' ``speculative``."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import start_server

PASSAGE = ("the old lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a small lamp and "
           "a notebook in which he wrote the color of the sky and the names of the ships.")
PROMPT = "\n\n".join([PASSAGE] * 3) + "\n\nthe old lighthouse"


@pytest.fixture(scope="module")
def server():
    with start_server("-np", "2", "-c", "1024", "--spec-type", "ngram-simple", "--spec-ngram-size-n", "4") as handle:
        yield handle


def complete(server, **body) -> httpx.Response:
    return httpx.post(f"{server.base_url}/completion",
                      json={"prompt": PROMPT, "n_predict": 40, "temperature": 0, **body}, timeout=120)


def test_completion_reports_drafted_and_accepted_tokens(server):
    on = complete(server).json()
    off = complete(server, **{"speculative.n_max": 0}).json()
    assert on["content"] == off["content"] and on["tokens_predicted"] == off["tokens_predicted"] == 40
    assert 0 < on["timings"]["draft_n_accepted"] <= on["timings"]["draft_n"]
    assert "draft_n" not in off["timings"]  # as llama-server: only when something was drafted


def test_a_streamed_chat_speculates_and_its_last_chunk_has_the_counts(server):
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 30, "temperature": 0, "stream": True,
            "timings_per_token": False}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert r.status_code == 200
    assert chunks[-1]["timings"]["predicted_n"] == 30
    assert chunks[-1]["timings"].get("draft_n", 0) >= chunks[-1]["timings"].get("draft_n_accepted", 0)


@pytest.mark.parametrize("field,value", [("speculative.n_max", -1), ("speculative.n_min", "many"),
                                          ("speculative.p_min", 1.5)])
def test_bad_speculative_fields_are_refused_by_name(server, field, value):
    r = complete(server, **{field: value})
    assert r.status_code == 400
    assert field in r.json()["error"]["message"]


def test_metrics_and_slots_show_speculation(server):
    complete(server)
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("llamacpp:spec")}
    assert values["llamacpp:spec_decode_num_draft_tokens_total"] >= values["llamacpp:spec_decode_num_accepted_tokens_total"] > 0
    assert values["llamacpp:spec_decode_num_drafts_total"] > 0
    assert values['llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"}'] > 0
    slots = httpx.get(f"{server.base_url}/slots", timeout=30).json()
    assert all(slot["speculative"] is True for slot in slots)
