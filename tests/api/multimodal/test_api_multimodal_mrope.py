"""M-RoPE models through a real server: a tiny Qwen2-VL text model (tiny_models.tiny_qwen2vl, random
weights, the embedded model's vocabulary) with a tiny qwen2vl merger projector (mmproj_models).

An image's embeddings take KV cells but advance the sequence by max(rows, columns) positions
(a 300 x 100 picture: 44 embeddings, 11 positions), so the tests compare what the server
predicts next with llama.cpp's own mtmd helper path run in process on the same prompt
(mtmd_reference): cold, after reusing a cached prefix through the picture, with new text after a
reused picture, in choices that copy each other's cells, with two pictures, and batched beside
text requests.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json

import httpx
import llama_cpp
import numpy as np
import pytest
from conftest import start_server
from mmproj_models import png, tiny_qwen2vl_mmproj
from mtmd_reference import log_softmax, next_logits
from tiny_models import tiny_qwen2vl

from ggserve.llama import projector

IMAGE = png(300, 100, 4)
N_EMBD = 44  # the picture's embeddings (11 x 4 merged patches); it advances the position by 11
TOP = 5
# logprobs of the same prompt: llama.cpp's CPU kernels round differently with the batch's shape
# and where the cells lie (design.md): up to 0.012 seen here batched beside text, 1e-7 alone; a
# wrong position moves them by whole units
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def server():
    with start_server("-m", tiny_qwen2vl(), "--mmproj", tiny_qwen2vl_mmproj()) as handle:
        yield handle


@pytest.fixture(scope="module")
def reference():
    """``reference(text, files)``: llama.cpp's next-token log-probabilities and prompt length."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False  # no repacked (AMX) kernels: this VM cannot run them
    model = llama_cpp.llama_model_load_from_file(tiny_qwen2vl().encode(), params)
    ctx, _ = projector.load(tiny_qwen2vl_mmproj(), model, use_gpu=False, n_threads=2, warmup=False)

    def run(text: str, files: list[bytes]) -> tuple[np.ndarray, int]:
        logits, n_tokens = next_logits(model, ctx, text, files)
        return log_softmax(logits), n_tokens

    yield run
    projector.free(ctx)
    llama_cpp.llama_model_free(model)


def complete(server, text: str, files: list[bytes], **extra) -> dict:
    prompt = {"prompt_string": text, "multimodal_data": [base64.b64encode(f).decode() for f in files]}
    body = {"prompt": prompt, "n_predict": 1, "temperature": 0, "n_probs": TOP, **extra}
    r = httpx.post(f"{server.base_url}/completion", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def assert_agrees(out: dict, expected: tuple[np.ndarray, int]) -> None:
    """The server's prompt is llama.cpp's, and so is its next-token distribution."""
    logprobs, n_tokens = expected
    assert out["tokens_evaluated"] == n_tokens
    top = out["completion_probabilities"][0]["top_logprobs"]
    assert len(top) == TOP
    assert max(abs(t["logprob"] - logprobs[t["id"]]) for t in top) < TOLERANCE
    # they are llama.cpp's best TOP, up to near ties at either end
    assert top[0]["logprob"] > logprobs.max() - TOLERANCE
    assert top[-1]["logprob"] > np.sort(logprobs)[-TOP] - TOLERANCE


def image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{base64.b64encode(data).decode()}"}}


def test_an_image_in_chat_streamed_and_not(server):
    content = [{"type": "text", "text": "What is this?"}, image_part(IMAGE)]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 6, "temperature": 0}
    whole = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert whole.status_code == 200, whole.text
    text_only = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, json={
        **body, "messages": [{"role": "user", "content": "What is this?"}]}).json()
    usage = whole.json()["usage"]
    assert usage["prompt_tokens"] - text_only["usage"]["prompt_tokens"] >= N_EMBD  # cells, not positions
    assert usage["completion_tokens"] == 6
    events = []
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=stream, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    assert "".join(c["delta"].get("content") or "" for e in events for c in e["choices"]) \
        == whole.json()["choices"][0]["message"]["content"]
    streamed = events[-1]["usage"]  # its prompt came from the cache, picture included
    assert streamed["prompt_tokens"] == usage["prompt_tokens"] and streamed["completion_tokens"] == 6
    assert streamed["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def test_the_next_token_is_what_llama_cpp_predicts(server, reference):
    text = "A picture: <__media__> and what it shows is"
    assert_agrees(complete(server, text, [IMAGE], cache_prompt=False), reference(text, [IMAGE]))


def test_a_reused_prefix_through_the_image_predicts_the_same(server, reference):
    text = "Look at <__media__> closely, then say"
    expected = reference(text, [IMAGE])
    first = complete(server, text, [IMAGE])
    second = complete(server, text, [IMAGE])
    assert second["tokens_cached"] == expected[1] - 1  # all but the last token, image included
    assert_agrees(first, expected)
    assert_agrees(second, expected)
    # new text after the reused picture starts at the position after the picture's 11, not 44
    longer = f"{text} something else entirely"
    out = complete(server, longer, [IMAGE])
    assert out["tokens_cached"] > N_EMBD
    assert_agrees(out, reference(longer, [IMAGE]))


def test_choices_of_one_image_prompt_share_its_cells(server, reference):
    """n_cmpl: the second choice copies the first one's prompt cells, picture included."""
    text = "Two answers about <__media__> begin with"
    expected = reference(text, [IMAGE])
    choices = complete(server, text, [IMAGE], n_cmpl=2, n_predict=4)
    assert [c["index"] for c in choices] == [0, 1]
    assert max(c["tokens_cached"] for c in choices) > N_EMBD  # one copied the other's, through the picture
    for choice in choices:
        assert_agrees(choice, expected)
    assert choices[0]["content"] == choices[1]["content"]  # greedy


def test_two_images_in_one_prompt(server, reference):
    other = png(56, 112, 9)  # 2 x 4 merged patches: 8 embeddings, 4 positions
    text = "First <__media__> then <__media__> and"
    assert_agrees(complete(server, text, [IMAGE, other]), reference(text, [IMAGE, other]))


def test_image_requests_batched_beside_text_requests(server, reference):
    texts = [f"Picture {i}: <__media__> shows" for i in range(3)]
    images = [png(300, 100, 20 + i) for i in range(3)]
    expected = [reference(t, [f]) for t, f in zip(texts, images)]

    def text_request(i: int) -> httpx.Response:
        return httpx.post(f"{server.base_url}/completion", timeout=120, json={
            "prompt": f"Count to ten, attempt {i}:", "n_predict": 12, "temperature": 0})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        with_images = [pool.submit(complete, server, t, [f], n_predict=8, cache_prompt=False)
                       for t, f in zip(texts, images)]
        plain = [pool.submit(text_request, i) for i in range(3)]
        for future, want in zip(with_images, expected):
            out = future.result()
            assert out["tokens_predicted"] == 8
            assert_agrees(out, want)
        for future in plain:
            assert future.result().status_code == 200 and future.result().json()["tokens_predicted"] == 12


def test_image_max_tokens_shrinks_a_picture_to_its_budget_in_frontend_and_executor(server):
    """Qwen2-VL resizes a picture to fit --image-max-tokens: 14 embeddings instead of 44; the
    executor encodes what the frontend counted (a disagreement would fail the request)."""
    full = complete(server, f"Look: {projector.marker().decode()}", [IMAGE])["tokens_evaluated"]
    with start_server("-m", tiny_qwen2vl(), "--mmproj", tiny_qwen2vl_mmproj(), "--image-max-tokens", "20") as capped:
        out = complete(capped, f"Look: {projector.marker().decode()}", [IMAGE], n_predict=3)
        assert out["tokens_evaluated"] == full - (N_EMBD - 14)
        assert out["tokens_predicted"] == 3
