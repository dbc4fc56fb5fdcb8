"""The frontend's video decoder without a server: llama-server's order of texts and frames, the
frames' bytes, and every limit (frames, bytes, time) as a 400 naming it; ffmpeg is killed when
a limit stops it, so no request waits on it."""

from __future__ import annotations

import hashlib

import pytest
from mmproj_models import png, video

from frontend.http.errors import ApiError
from frontend.media.files import media_file, sniff
from frontend.media.video import PROMPT_START, VideoDecoder, split_png_stream
from ggserve.config import ServeConfig


def decoder(**settings) -> VideoDecoder:
    max_bytes = settings.pop("max_frame_bytes", 32 << 20)
    return VideoDecoder(ServeConfig(model="unused.gguf", **settings), max_bytes)


def clip(data: bytes):
    return media_file(data, "video", "messages[0].content[1]")


def failure(dec: VideoDecoder, data: bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        dec.parts(clip(data))
    assert info.value.param == "messages[0].content[1]"
    return info.value


def test_texts_and_frames_in_llama_server_order():
    parts = decoder(video_fps=4, video_timestamp_interval=500).parts(clip(video(1.0)))
    assert parts[0] == PROMPT_START
    frames = [p for p in parts if not isinstance(p, str)]
    assert len(frames) == 4  # 1 s at 4 frames a second
    # a timestamp after the frame reaching each 500 ms: frames 0 and 2
    assert [type(p).__name__ for p in parts[1:]] == ["MediaFile", "str", "MediaFile", "MediaFile", "str", "MediaFile"]
    assert [p for p in parts[1:] if isinstance(p, str)] == ["[0m0.00s]", "[0m0.50s]"]
    for frame in frames:
        assert sniff(frame.data) == ("image", "png") and frame.sha256 == hashlib.sha256(frame.data).hexdigest()
    assert len({f.sha256 for f in frames}) == len(frames)  # the pattern moves: every frame differs
    again = decoder(video_fps=4, video_timestamp_interval=500).parts(clip(video(1.0)))
    assert [f.sha256 for f in frames] == [p.sha256 for p in again if not isinstance(p, str)]  # deterministic


def test_no_timestamps_when_the_interval_is_zero():
    parts = decoder(video_fps=2, video_timestamp_interval=0).parts(clip(video(1.0)))
    assert parts[0] == PROMPT_START and all(not isinstance(p, str) for p in parts[1:])
    assert len(parts) - 1 == 2


def test_too_many_frames_names_the_limit():
    err = failure(decoder(video_fps=4, video_max_frames=3), video(1.0))
    assert err.status == 400 and "more than 3 frames" in err.message and "--video-max-frames" in err.message


def test_frames_beyond_the_byte_limit_stop_ffmpeg():
    err = failure(decoder(max_frame_bytes=2000), video(1.0))
    assert err.status == 400 and "more than 2000 bytes" in err.message


def test_a_decode_past_the_timeout_is_killed_and_named():
    err = failure(decoder(video_decode_timeout=0.001), video(1.0))
    assert err.status == 400 and "--video-decode-timeout" in err.message


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x18ftypisom" + b"\x17" * 400, b"\x1a\x45\xdf\xa3" + b"\x00" * 64])
def test_a_broken_video_is_a_400_with_ffmpeg_reason(data):
    err = failure(decoder(), data)
    assert err.status == 400 and err.message.startswith("the video could not be decoded")


def test_without_ffmpeg_the_reason_names_it(tmp_path):
    dec = decoder(video_ffmpeg_dir=str(tmp_path))
    assert dec.ffmpeg is None and "ffmpeg" in dec.unavailable_reason and str(tmp_path) in dec.unavailable_reason
    err = failure(dec, video(0.5))
    assert err.status == 501


def test_the_png_stream_splits_into_files_and_a_cut_file_is_an_error():
    a, b = png(8, 8, 1), png(9, 7, 2)
    assert split_png_stream(a + b) == [a, b]
    assert split_png_stream(b"") == []
    with pytest.raises(ValueError):
        split_png_stream(a + b[:-3])
    with pytest.raises(ValueError):
        split_png_stream(a + b"junk")


@pytest.mark.parametrize(("head", "found"), [
    (b"\x00\x00\x00\x18ftypisom", ("video", "mp4")),
    (b"\x00\x00\x00\x14ftypqt  ", ("video", "mp4")),
    (b"\x00\x00\x00\x1cftypavif", None),  # a still picture in the same box format
    (b"\x00\x00\x00\x20ftypM4A ", None),  # sound only
    (b"\x1a\x45\xdf\xa3\x01\x00", ("video", "webm")),
    (b"RIFF\x00\x00\x00\x00AVI LIST", ("video", "avi")),
    (b"FLV\x01\x05", ("video", "flv")),
    (b"\x00\x00\x01\xba\x44", ("video", "mpeg")),
])
def test_video_containers_are_sniffed(head, found):
    assert sniff(head + b"\x00" * 400) == found


def test_an_ffmpeg_that_does_not_run_is_a_501(tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_bytes(b"\x7fELF not really")
    fake.chmod(0o755)
    err = failure(decoder(video_ffmpeg_dir=str(tmp_path)), video(0.5))
    assert err.status == 501 and "does not run" in err.message
