"""Audio in prompts through a real server: the embedded Gemma 3 270M with a tiny random
Ultravox (Whisper encoder) projector (tests/mmproj_models.py: 75 embeddings per 30 s window).

Also what a server refuses when its projector has no image encoder, when remote media is off
(the default), and when it has no projector at all.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json

import httpx
import openai
import pytest
from conftest import start_server
from mmproj_models import AUDIO_TOKENS, png, tiny_audio_mmproj, video, wav


@pytest.fixture(scope="module")
def server():
    with start_server("-np", "2", "-c", "1024", "--mmproj", tiny_audio_mmproj()) as handle:
        yield handle


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def chat(server, content, timeout: float = 120, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4, "temperature": 0, **extra}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout)


def test_modalities_are_reported(server):
    assert httpx.get(f"{server.base_url}/props", timeout=30).json()["modalities"] == {
        "vision": False, "video": False, "audio": True}
    models = httpx.get(f"{server.base_url}/v1/models", timeout=30).json()
    assert models["data"][0]["architecture"]["input_modalities"] == ["text", "audio"]


def test_audio_chat_counts_its_embeddings_and_reuses_the_prefix(server):
    content = [{"type": "text", "text": "Transcribe:"}, audio_part(wav(1.5))]
    text = chat(server, [{"type": "text", "text": "Transcribe:"}]).json()["usage"]["prompt_tokens"]
    first = chat(server, content)
    assert first.status_code == 200, first.text
    n_prompt = first.json()["usage"]["prompt_tokens"]
    assert n_prompt - text >= AUDIO_TOKENS
    second = chat(server, content).json()["usage"]
    assert second["prompt_tokens"] == n_prompt
    assert second["prompt_tokens_details"]["cached_tokens"] == n_prompt - 1


def test_a_clip_over_30_s_is_several_windows(server):
    """mtmd cuts audio into 30 s windows, a chunk each: a 31 s clip is two, and a short clip
    after it a third (the executor encodes each window of the file on its own)."""
    short = chat(server, [{"type": "text", "text": "Hear"}, audio_part(wav(2.0))]).json()["usage"]["prompt_tokens"]
    long = chat(server, [{"type": "text", "text": "Hear"}, audio_part(wav(31.0))])
    assert long.status_code == 200, long.text
    assert long.json()["usage"]["prompt_tokens"] == short + AUDIO_TOKENS  # a second window
    again = chat(server, [{"type": "text", "text": "Hear"}, audio_part(wav(31.0))]).json()["usage"]
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] - 1
    both = chat(server, [{"type": "text", "text": "Hear"}, audio_part(wav(31.0)), audio_part(wav(2.0, seed=3))])
    assert both.status_code == 200, both.text
    assert both.json()["usage"]["prompt_tokens"] >= short + 2 * AUDIO_TOKENS


def test_the_clip_reaches_the_model(server):
    # One slot, so the cells are the same each time: llama.cpp's CPU kernels round differently
    # where a sequence's cells lie in the shared cache, text or audio alike (design.md).
    def logprobs(seed: int) -> list:
        r = chat(server, [{"type": "text", "text": "Hear"}, audio_part(wav(1.0, seed=seed))], logprobs=True,
                 top_logprobs=5, cache_prompt=False, id_slot=0)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"]

    a, again, b = logprobs(1), logprobs(1), logprobs(2)
    assert a == again
    assert a != b


def test_streamed_audio_chat(server):
    body = {"messages": [{"role": "user", "content": [audio_part(wav(0.8)), {"type": "text", "text": "Say"}]}],
            "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert events[-1]["usage"]["completion_tokens"] == 3
    assert events[-1]["usage"]["prompt_tokens"] > AUDIO_TOKENS


@pytest.mark.parametrize(("part", "needle"), [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png(20, 20)).decode()}},
     "no image encoder"),
    ({"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}, "--allow-remote-media"),
    (audio_part(b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 16), "could not be decoded"),
    (audio_part(png(20, 20)), "holds image"),
    ({"type": "input_video", "input_video": {"data": base64.b64encode(video(0.5)).decode()}},
     "no image encoder (a video's frames go to it as images)"),
])
def test_bad_input_is_a_400(server, part, needle):
    r = chat(server, [{"type": "text", "text": "Hi"}, part])
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "messages[0].content[1]"


def transcribe(server, data: bytes, route: str = "/v1/audio/transcriptions", **fields: str) -> httpx.Response:
    form = {"model": "whisper-1", "temperature": "0", "max_tokens": "4", **fields}
    return httpx.post(f"{server.base_url}{route}", data=form, files={"file": ("clip.wav", data, "audio/wav")},
                      timeout=120)


def test_transcriptions_through_the_openai_client(server):
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", _strict_response_validation=True)
    result = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", wav(1.0)), temperature=0,
                                                extra_body={"max_tokens": 4})
    assert isinstance(result.text, str)
    body = transcribe(server, wav(1.0)).json()
    assert body["text"] == result.text  # greedy: the same answer again
    usage = body["usage"]
    assert body["type"] == "transcript.text.done" and usage["type"] == "tokens"  # llama-server's shape
    assert usage["input_tokens"] > AUDIO_TOKENS and 0 < usage["output_tokens"] <= 4
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == usage["input_tokens"] - 1  # the same clip again
    french = transcribe(server, wav(1.0), "/audio/transcriptions", language="fr").json()["usage"]
    assert french["input_tokens"] > usage["input_tokens"]  # " (language: fr)" joins the prompt
    text = transcribe(server, wav(1.0), response_format="text")
    assert text.headers["content-type"].startswith("text/plain") and text.text == body["text"]


def test_streamed_transcription_sends_deltas_then_the_whole_text(server):
    with httpx.stream("POST", f"{server.base_url}/v1/audio/transcriptions", timeout=120,
                      data={"stream": "true", "max_tokens": "5", "temperature": "0"},
                      files={"file": ("clip.wav", wav(0.8), "audio/wav")}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    deltas, done = events[:-1], events[-1]
    assert {e["type"] for e in deltas} <= {"transcript.text.delta"} and done["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in deltas) == done["text"] and done["usage"]["output_tokens"] <= 5


@pytest.mark.parametrize(("fields", "files", "param", "needle"), [
    ({"model": "whisper-1"}, {}, "file", "No input file found"),
    ({"timestamp_granularities[]": "word"}, None, "timestamp_granularities[]", "not supported"),
    ({"response_format": "srt"}, None, "response_format", "json, text"),
    ({"stream": "yes"}, None, "stream", "true or false"),
    ({"max_tokens": "many"}, None, "max_tokens", "not an integer"),
    ({}, {"file": ("cat.png", png(8, 8), "image/png")}, "file", "WAV, MP3 or FLAC"),
    ({}, {"file": ("bad.wav", b"RIFF\x10\x00\x00\x00WAVEfmt " + b"\x00" * 16, "audio/wav")}, "file",
     "could not be decoded"),
])
def test_bad_transcription_requests_are_a_400_naming_the_field(server, fields, files, param, needle):
    files = {"file": ("clip.wav", wav(0.5), "audio/wav")} if files is None else files
    if files:
        r = httpx.post(f"{server.base_url}/v1/audio/transcriptions", data=fields, files=files, timeout=60)
    else:  # a form of text fields only (httpx would send it urlencoded)
        parts = b"".join(f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                         for k, v in fields.items())
        r = httpx.post(f"{server.base_url}/v1/audio/transcriptions", content=parts + b"--b--\r\n", timeout=60,
                       headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and needle in r.json()["error"]["message"]
    json_body = httpx.post(f"{server.base_url}/v1/audio/transcriptions", json={"file": "x"}, timeout=60)
    assert json_body.status_code == 400 and "multipart/form-data" in json_body.json()["error"]["message"]


def test_a_server_without_mmproj_refuses_media():
    with start_server("-np", "1", "-c", "512") as plain:
        r = transcribe(plain, wav(0.5))
        assert r.status_code == 501 and r.json()["error"]["message"] == "The current model does not support audio input."
        r = chat(plain, [{"type": "text", "text": "Hi"}, audio_part(wav(0.5))])
        assert r.status_code == 400, r.text
        assert "--mmproj" in r.json()["error"]["message"]
        native = httpx.post(f"{plain.base_url}/completion", timeout=60, json={"prompt": {
            "prompt_string": "<__media__>", "multimodal_data": [base64.b64encode(png(8, 8)).decode()]}})
        assert native.status_code == 400 and "--mmproj" in native.json()["error"]["message"]
        image = "data:image/png;base64," + base64.b64encode(png(8, 8)).decode()
        responses = httpx.post(f"{plain.base_url}/v1/responses", timeout=60, json={"input": [
            {"role": "user", "content": [{"type": "input_image", "image_url": image}]}]})
        assert responses.status_code == 400 and "--mmproj" in responses.json()["error"]["message"]
        props = httpx.get(f"{plain.base_url}/props", timeout=30).json()
        assert props["modalities"] == {"vision": False, "video": False, "audio": False}


def test_clips_that_do_not_all_fit_the_cache_wait_for_room():
    # 256 cells hold two of these ~100-token prompts: admitted together, the third one's clip
    # (75 embeddings, taken whole) finds too few free cells once the first two have prefilled,
    # and must get the cells they leave cached when they finish, not wait for ever.
    with start_server("-np", "4", "-c", "256", "--mmproj", tiny_audio_mmproj()) as small:
        def one(i: int) -> httpx.Response:
            content = [{"type": "text", "text": f"Here is clip number {i} of the three clips, listen:"},
                       audio_part(wav(1.0, seed=10 + i))]
            return chat(small, content, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(one, range(3)))
        for r in results:
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 4


def test_a_clip_larger_than_a_slot_context_is_a_400_naming_both_sizes():
    with start_server("-np", "1", "-c", "256", "--ctx-per-request", "64", "--mmproj", tiny_audio_mmproj()) as tight:
        r = chat(tight, [{"type": "text", "text": "Hear"}, audio_part(wav(1.0))])
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["type"] == "exceed_context_size_error" and err["param"] == "messages[0].content[1]"
        assert f"{AUDIO_TOKENS} embeddings" in err["message"] and "64 tokens" in err["message"]
        assert (err["n_chunk_tokens"], err["n_ctx"]) == (AUDIO_TOKENS, 64)
