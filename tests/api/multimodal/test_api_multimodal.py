"""Images in prompts through a real server: the embedded Gemma 3 270M with a tiny random Gemma 3
vision projector (tests/mmproj_models.py, 4 embeddings an image).

The projector's weights are random and the model is a base model: the tests check shapes, token
counts, that the picture reaches the model (other pictures, other logits), determinism, prefix
reuse through the picture, batching beside text requests, and every bad input as a 400.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import start_server
from mmproj_models import IMAGE_TOKENS, png, tiny_vision_mmproj, video, wav

from ipc.shm import SHM_DIR

MAX_BYTES = 100_000


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    """--media-path: cat.png, sub/big.png, and a link to a picture outside it."""
    root = tmp_path_factory.mktemp("media")
    (root / "cat.png").write_bytes(png(40, 40, 5))
    (root / "sub").mkdir()
    (root / "sub" / "big.png").write_bytes(png(400, 400, 6))
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(png(40, 40, 5))
    (root / "link.png").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def server(media_dir):
    with start_server("--mmproj", tiny_vision_mmproj(), "--media-max-bytes", str(MAX_BYTES),
                      "--allow-remote-media", "--media-fetch-timeout", "2", "--media-path", str(media_dir)) as handle:
        yield handle


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_uri(data)}}


def chat(server, content: list[dict] | str, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0, **extra}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)


def first_logprobs(r: httpx.Response) -> dict[str, float]:
    assert r.status_code == 200, r.text
    top = r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    return {t["token"]: t["logprob"] for t in top}


def error(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"]
    return err


def test_modalities_are_reported(server):
    props = httpx.get(f"{server.base_url}/props", timeout=30).json()
    assert props["modalities"] == {"vision": True, "video": True, "audio": False}  # test extra: ffmpeg
    assert props["media_marker"] == "<__media__>"
    models = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()
    assert models["data"][0]["architecture"]["input_modalities"] == ["text", "image"]
    assert "multimodal" in models["models"][0]["capabilities"]


def test_an_image_counts_its_embeddings_in_the_prompt(server):
    text = chat(server, [{"type": "text", "text": "Describe:"}])
    one = chat(server, [{"type": "text", "text": "Describe:"}, image_part(png(40, 30))])
    two = chat(server, [{"type": "text", "text": "Describe:"}, image_part(png(40, 30)), image_part(png(20, 60, 1))])
    n_text, n_one, n_two = (r.json()["usage"]["prompt_tokens"] for r in (text, one, two))
    assert n_one - n_text >= IMAGE_TOKENS  # the image's embeddings and the text mtmd wraps them in
    assert n_two - n_one == n_one - n_text  # one more image, the same again
    for r in (one, two):
        assert r.json()["usage"]["completion_tokens"] == 4
        assert r.json()["choices"][0]["finish_reason"] == "length"
    counted = httpx.post(f"{server.base_url}/v1/chat/completions/input_tokens", timeout=60, json={
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, image_part(png(40, 30))]}]})
    assert counted.json()["input_tokens"] == n_one


def test_the_picture_reaches_the_model_deterministically(server):
    # One slot, so the cells are the same each time: llama.cpp's CPU kernels round differently
    # where a sequence's cells lie in the shared cache, text or images alike (design.md).
    def logprobs(seed: int) -> dict[str, float]:
        return first_logprobs(chat(server, [{"type": "text", "text": "Look"}, image_part(png(56, 56, seed))],
                                   logprobs=True, top_logprobs=5, cache_prompt=False, id_slot=0))

    a, again, b = logprobs(0), logprobs(0), logprobs(7)
    assert a == again
    assert a != b


def test_a_second_request_reuses_the_prefix_through_the_image(server):
    content = [{"type": "text", "text": "First question about"}, image_part(png(48, 36, 3)),
               {"type": "text", "text": "What colour dominates?"}]
    first = chat(server, content, logprobs=True, top_logprobs=3)
    second = chat(server, content, logprobs=True, top_logprobs=3)
    n_prompt = first.json()["usage"]["prompt_tokens"]
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == n_prompt - 1  # all but the last token, which gives the first logits
    assert cached > IMAGE_TOKENS
    # The reused cache (image included) predicts what a fresh prefill does: same top token,
    # or a near tie (batch shapes change float rounding, see design.md).
    fresh, reused = first_logprobs(first), first_logprobs(second)
    best = max(fresh, key=fresh.get)
    assert max(reused, key=reused.get) == best or abs(fresh[best] - reused.get(best, -99)) < 0.1


def test_another_image_after_the_same_text_is_not_reused(server):
    head = [{"type": "text", "text": "Compare the pictures, one:"}]
    chat(server, [*head, image_part(png(30, 30, 11))])
    same = chat(server, [*head, image_part(png(30, 30, 11))]).json()["usage"]
    other = chat(server, [*head, image_part(png(30, 30, 12))]).json()["usage"]
    n = same["prompt_tokens"]
    assert other["prompt_tokens"] == n and same["prompt_tokens_details"]["cached_tokens"] == n - 1
    # the shared text only: at least the picture's positions are evaluated again
    assert 0 < other["prompt_tokens_details"]["cached_tokens"] <= n - 1 - IMAGE_TOKENS


def test_streamed_image_chat(server):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, image_part(png(40, 40))]}],
            "max_tokens": 5, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] == 5 and usage["prompt_tokens"] > IMAGE_TOKENS
    whole = chat(server, [{"type": "text", "text": "Hi"}, image_part(png(40, 40))], max_tokens=5)
    assert text == whole.json()["choices"][0]["message"]["content"]


def test_image_requests_batched_beside_text_requests(server):
    def image(i: int) -> httpx.Response:
        return chat(server, [{"type": "text", "text": f"Picture {i}"}, image_part(png(32, 32, 100 + i))],
                    max_tokens=12)

    def text(i: int) -> httpx.Response:
        return chat(server, f"Count to ten, attempt {i}:", max_tokens=12)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(image, i) for i in range(3)] + [pool.submit(text, i) for i in range(3)]
        results = [f.result() for f in futures]
    for r in results:
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 12


def test_n_choices_of_one_image_prompt(server):
    one = chat(server, [{"type": "text", "text": "Choices"}, image_part(png(36, 36, 21))], max_tokens=3)
    two = chat(server, [{"type": "text", "text": "Choices"}, image_part(png(36, 36, 22))], max_tokens=3, n=2,
               temperature=0.9, seed=5)
    assert two.status_code == 200, two.text
    assert [c["index"] for c in two.json()["choices"]] == [0, 1]
    usage = two.json()["usage"]
    assert usage["prompt_tokens"] == one.json()["usage"]["prompt_tokens"] and usage["completion_tokens"] == 6


def test_completion_multimodal_data(server):
    prompt = {"prompt_string": "A photo: <__media__> It shows", "multimodal_data": [base64.b64encode(png(40, 40)).decode()]}
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": prompt, "n_predict": 4, "temperature": 0},
                   timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tokens_predicted"] == 4 and out["tokens_evaluated"] > IMAGE_TOKENS
    plain = httpx.post(f"{server.base_url}/completion", json={"prompt": "A photo:  It shows", "n_predict": 1},
                       timeout=120).json()
    assert out["tokens_evaluated"] >= plain["tokens_evaluated"] + IMAGE_TOKENS
    mismatch = httpx.post(f"{server.base_url}/completion", timeout=60, json={
        "prompt": {"prompt_string": "no marker here", "multimodal_data": [base64.b64encode(png(8, 8)).decode()]}})
    assert "media markers" in error(mismatch)["message"]
    openai_route = httpx.post(f"{server.base_url}/v1/completions", json={"prompt": prompt, "max_tokens": 2},
                              timeout=60)
    assert openai_route.status_code == 400 and "/completion or /v1/chat/completions" in error(openai_route)["message"]


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/drip.png":  # a byte a second: each read within the timeout, the whole not
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:  # the fetch gave up
                    return
                time.sleep(1.0)
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    _Files.files = {"/cat.png": png(40, 40, 5), "/big.png": png(400, 400, 6), "/clip.mp4": video(0.5, seed=7)}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_remote_image_is_fetched_within_limits(server, files_url):
    def remote(path: str) -> httpx.Response:
        return chat(server, [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": files_url + path}}])

    ok = remote("/cat.png")
    assert ok.status_code == 200, ok.text
    local = chat(server, [{"type": "text", "text": "Look"}, image_part(png(40, 40, 5))])
    assert ok.json()["usage"]["prompt_tokens"] == local.json()["usage"]["prompt_tokens"]
    assert "--media-max-bytes" in error(remote("/big.png"))["message"]
    assert "HTTP 404" in error(remote("/missing.png"))["message"]
    t0 = time.monotonic()
    assert "--media-fetch-timeout" in error(remote("/drip.png"))["message"]  # the whole fetch, not each read
    assert time.monotonic() - t0 < 10


def test_file_urls_read_inside_the_media_path_only(server, media_dir):
    def local(url: str) -> httpx.Response:
        return chat(server, [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url}}])

    ok = local("file://cat.png")
    assert ok.status_code == 200, ok.text
    inline = chat(server, [{"type": "text", "text": "Look"}, image_part(png(40, 40, 5))])
    assert ok.json()["usage"]["prompt_tokens"] == inline.json()["usage"]["prompt_tokens"]
    assert "--media-max-bytes" in error(local("file://sub/big.png"))["message"]
    for escape in ("file://../outside/secret.png", f"file://{media_dir}/cat.png", "file://link.png", "file://"):
        assert "file path is not allowed" in error(local(escape))["message"], escape
    assert "does not exist" in error(local("file://missing.png"))["message"]


def test_file_urls_need_a_media_path() -> None:
    from frontend.media.files import MediaLimits, _local
    from frontend.http.errors import ApiError
    from ggserve.config import ServeConfig

    limits = MediaLimits(ServeConfig(model="", mmproj="x"), vision=True, audio=False, no_video=None)
    with pytest.raises(ApiError, match="unless the server has --media-path"):
        _local("file://cat.png", "messages[0].content[1]", limits)


def test_remote_video_is_fetched_as_images_are(server, files_url):
    part = {"type": "video_url", "video_url": {"url": files_url + "/clip.mp4"}}
    remote = chat(server, [{"type": "text", "text": "Watch"}, part])
    assert remote.status_code == 200, remote.text
    inline = chat(server, [{"type": "text", "text": "Watch"}, {"type": "video_url", "video_url": {
        "url": data_uri(video(0.5, seed=7), "video/mp4")}}])
    assert remote.json()["usage"]["prompt_tokens"] == inline.json()["usage"]["prompt_tokens"] > IMAGE_TOKENS


@pytest.mark.parametrize(("part", "needle"), [
    (image_part(png(40, 40)[:60]), "could not be decoded"),  # a truncated PNG
    (image_part(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200), "could not be decoded"),
    (image_part(b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64), "unsupported media format (WebP)"),
    (image_part(b"just some text, not a picture"), "unsupported media format"),
    (image_part(png(400, 400)), "--media-max-bytes"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%notbase64"}}, "base64"),
    ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "base64"),
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "data: URI"),
    ({"type": "image_url", "image_url": {"url": data_uri(wav(0.5), "audio/wav")}}, "holds audio"),
    ({"type": "input_audio", "input_audio": {"data": base64.b64encode(wav(0.5)).decode(), "format": "wav"}},
     "no audio encoder"),
])
def test_bad_media_is_a_400_naming_the_part(server, part, needle):
    err = error(chat(server, [{"type": "text", "text": "Look"}, part]))
    assert needle in err["message"]
    assert err["param"] == "messages[0].content[1]"


def test_the_server_survives_bad_media(server):
    ok = chat(server, [{"type": "text", "text": "Still"}, image_part(png(40, 40, 9))])
    assert ok.status_code == 200, ok.text


def test_images_through_the_anthropic_and_responses_apis(server):
    image = png(40, 40, 31)
    b64 = base64.b64encode(image).decode()
    chat_usage = chat(server, [{"type": "text", "text": "Look"}, image_part(image)]).json()["usage"]
    messages = httpx.post(f"{server.base_url}/v1/messages", timeout=120, json={"max_tokens": 3, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": b64}}]}]})
    assert messages.status_code == 200, messages.text
    assert messages.json()["usage"]["input_tokens"] + messages.json()["usage"].get("cache_read_input_tokens", 0) \
        == chat_usage["prompt_tokens"]
    counted = httpx.post(f"{server.base_url}/v1/messages/count_tokens", timeout=60, json={"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image", "source": {"type": "url", "url": data_uri(image)}}]}]})
    assert counted.json()["input_tokens"] == chat_usage["prompt_tokens"]
    responses = httpx.post(f"{server.base_url}/v1/responses", timeout=120, json={"max_output_tokens": 3, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Look"},
                                     {"type": "input_image", "image_url": data_uri(image)}]}]})
    assert responses.status_code == 200, responses.text
    assert responses.json()["usage"]["input_tokens"] == chat_usage["prompt_tokens"]
    broken = httpx.post(f"{server.base_url}/v1/messages", timeout=60, json={"max_tokens": 3, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"


def test_a_stopped_server_leaves_no_shared_memory():
    """The HTTP workers' media arenas go with the server: the launcher kills the frontend's
    process group (their resource trackers too), then unlinks what they owned."""
    before = set(os.listdir(SHM_DIR))
    with start_server("--mmproj", tiny_vision_mmproj(), "--media-max-bytes", str(MAX_BYTES)) as handle:
        assert chat(handle, [{"type": "text", "text": "Look"}, image_part(png(32, 32, 1))]).status_code == 200
        assert any("frontend-media" in name for name in set(os.listdir(SHM_DIR)) - before)
    assert not set(os.listdir(SHM_DIR)) - before
