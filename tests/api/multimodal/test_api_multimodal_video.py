"""Video in prompts through a real server: the embedded Gemma 3 270M with the tiny random Gemma 3
vision projector (tests/mmproj_models.py, 4 embeddings an image). The frontend decodes each video
with ffmpeg into frames at --video-fps, sent as images between llama-server's texts ("Video:",
timestamps); the test videos are ffmpeg's test pattern, written with the same ffmpeg.

Checked: the prompt counts "Video:", every frame's embeddings and the timestamp texts; both
llama-server spellings of a video part; the same video twice reuses the cached prefix through
every frame; each limit is a 400 naming it; a server without ffmpeg answers 501.
"""

from __future__ import annotations

import base64

import httpx
import pytest
from conftest import start_server
from mmproj_models import IMAGE_TOKENS, png, tiny_vision_mmproj, video

FPS = 4  # --video-fps
INTERVAL_MS = 500  # --video-timestamp-interval
MAX_FRAMES = 8  # --video-max-frames


@pytest.fixture(scope="module")
def server():
    with start_server("--mmproj", tiny_vision_mmproj(), "--video-fps", str(FPS), "--video-timestamp-interval",
                      str(INTERVAL_MS), "--video-max-frames", str(MAX_FRAMES)) as handle:
        yield handle


def video_part(data: bytes, spelling: str = "input_video") -> dict:
    if spelling == "input_video":  # llama-server's own: bare base64 in data
        return {"type": "input_video", "input_video": {"data": base64.b64encode(data).decode()}}
    return {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(data).decode()}}


def chat(server, content: list[dict], **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0, **extra}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)


def error(r: httpx.Response, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"]
    return err


def n_tokens(server, text: str) -> int:
    r = httpx.post(f"{server.base_url}/tokenize", json={"content": text}, timeout=30)
    return len(r.json()["tokens"])


def evaluated(server, files: list[bytes]) -> int:
    """Prompt tokens of /completion's ``Clip: <marker> What happens?`` with these files."""
    marker = " <__media__>" if files else ""
    prompt = {"prompt_string": f"Clip:{marker} What happens?", "multimodal_data": [
        base64.b64encode(f).decode() for f in files]}
    r = httpx.post(f"{server.base_url}/completion", json={"prompt": prompt, "n_predict": 1}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["tokens_evaluated"]


def test_video_is_a_modality_of_a_vision_projector_with_ffmpeg(server):
    props = httpx.get(f"{server.base_url}/props", timeout=30).json()
    assert props["modalities"] == {"vision": True, "video": True, "audio": False}


def test_the_prompt_counts_every_frame_and_the_timestamp_texts(server):
    seconds = 1.5
    n_frames = round(seconds * FPS)
    # mtmd tokenizes each text between media on its own: BOS, "Clip: ", " What happens?"
    n_text = 1 + n_tokens(server, "Clip: ") + n_tokens(server, " What happens?")
    per_image = evaluated(server, [png(40, 30)]) - n_text  # its embeddings and Gemma 3's wrapping
    assert per_image >= IMAGE_TOKENS
    stamps = [f"[0m{ms / 1000:.2f}s]" for ms in range(0, int(seconds * 1000), INTERVAL_MS)]
    expected = (n_text + n_tokens(server, "Video:") + n_frames * per_image
                + sum(n_tokens(server, stamp) for stamp in stamps))
    assert evaluated(server, [video(seconds)]) == expected


def test_both_spellings_of_a_video_part_in_chat(server):
    clip = video(1.0, seed=2)
    head = [{"type": "text", "text": "What happens in"}]
    a = chat(server, [*head, video_part(clip)])
    b = chat(server, [*head, video_part(clip, "video_url")])
    for r in (a, b):
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 3
    assert a.json()["usage"]["prompt_tokens"] == b.json()["usage"]["prompt_tokens"] > FPS * IMAGE_TOKENS


def test_the_same_video_twice_reuses_the_prefix_through_its_frames(server):
    content = [{"type": "text", "text": "Describe the clip"}, video_part(video(1.0, seed=3)),
               {"type": "text", "text": "in one word"}]
    first = chat(server, content, logprobs=True, top_logprobs=3)
    second = chat(server, content, logprobs=True, top_logprobs=3)
    assert first.status_code == second.status_code == 200, first.text
    n_prompt = first.json()["usage"]["prompt_tokens"]
    assert second.json()["usage"]["prompt_tokens"] == n_prompt
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == n_prompt - 1 and cached > FPS * IMAGE_TOKENS
    # another video after the same text: only the text is reused
    other = chat(server, [content[0], video_part(video(1.0, seed=4)), content[2]]).json()["usage"]
    assert 0 < other["prompt_tokens_details"]["cached_tokens"] < n_prompt - FPS * IMAGE_TOKENS


@pytest.mark.parametrize(("data", "needle"), [
    (video(1.0)[:200], "could not be decoded"),  # cut short: its header, no index, no frames
    (b"\x00\x00\x00\x18ftypisom" + b"\x17" * 400, "could not be decoded"),
    (video(MAX_FRAMES / FPS + 1), f"more than {MAX_FRAMES} frames"),
    (png(20, 20), "holds image"),
])
def test_bad_videos_are_a_400_naming_the_part(server, data, needle):
    err = error(chat(server, [{"type": "text", "text": "Watch"}, video_part(data)]))
    assert needle in err["message"]
    assert err["param"] == "messages[0].content[1]"
    if "frames" in needle:
        assert "--video-max-frames" in err["message"]


def test_a_video_part_without_data_or_url_is_a_400(server):
    err = error(chat(server, [{"type": "input_video", "input_video": {}}]))
    assert "data or url" in err["message"]


def test_a_still_video_counts_every_frame(server):
    # identical frames share one media id (and one encoding): each still takes its place
    replies = [chat(server, [{"type": "text", "text": "Watch"}, video_part(v)])
               for v in (video(1.0, source="color"), video(1.0, seed=6))]
    assert all(r.status_code == 200 for r in replies), replies[0].text
    still, moving = (r.json()["usage"] for r in replies)
    assert still["prompt_tokens"] == moving["prompt_tokens"] and still["completion_tokens"] == 3


def test_the_server_survives_bad_videos(server):
    ok = chat(server, [{"type": "text", "text": "Still"}, video_part(video(0.5, seed=5))])
    assert ok.status_code == 200, ok.text


def test_a_server_without_ffmpeg_answers_501(tmp_path):
    with start_server("--mmproj", tiny_vision_mmproj(), "--video-ffmpeg-dir", str(tmp_path)) as bare:
        assert httpx.get(f"{bare.base_url}/props", timeout=30).json()["modalities"]["video"] is False
        err = error(chat(bare, [{"type": "text", "text": "Watch"}, video_part(video(0.5))]), 501)
        assert "ffmpeg" in err["message"] and "--video-ffmpeg-dir" in err["message"]
        assert chat(bare, [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(png(30, 30)).decode()}}]).status_code == 200
