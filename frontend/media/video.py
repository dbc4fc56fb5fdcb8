"""Video in prompts, as llama-server takes it: frames sampled with ffmpeg, sent on as images.

llama-server (mtmd-helper built with MTMD_VIDEO) pipes a video through ffmpeg at ``--video-fps``
frames a second and puts, where the video's media marker was, the text ``Video:``, then each
frame as an image, with a timestamp text (``[0m5.00s]``) after the frame that reaches each
``--video-timestamp-interval`` ms (the first frame's included). This module does the same in the
frontend with an ffmpeg binary (``--video-ffmpeg-dir``, else PATH, else the one the imageio-ffmpeg
package ships: no ffprobe is needed) and hands each frame on as a PNG file: lossless, so the
encoder sees the pixels llama-server's would, and the engine sees images only (its encoder cache
and the prefix cache key frames by their bytes, so the same video twice reuses the prefix).

Every limit is a 400 naming it: the file (``--media-max-bytes``, checked before), the frames
(``--video-max-frames``), their bytes as PNG (what a worker's media arena holds), the time ffmpeg
takes (``--video-decode-timeout``: it is killed then). A server without ffmpeg answers 501.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from typing import IO

from frontend.http.errors import ApiError, invalid
from frontend.media.files import MediaFile, media_file
from ggserve.config import ServeConfig

PROMPT_START = "Video:"  # mtmd-helper's text before the frames
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STDERR_KEEP = 4096  # bytes of ffmpeg's error output kept for the message


def find_ffmpeg(directory: str) -> str | None:
    """The ffmpeg binary videos are decoded with, or None."""
    if directory:
        path = os.path.join(directory, "ffmpeg")
        return path if os.access(path, os.X_OK) else None
    found = shutil.which("ffmpeg")
    if found is not None:
        return found
    try:
        import imageio_ffmpeg  # optional (ggserve[video]): a static ffmpeg in a wheel
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # a platform it ships no binary for
        return None


class VideoDecoder:
    """Turns a video file into the prompt parts llama-server makes of it."""

    def __init__(self, cfg: ServeConfig, max_frame_bytes: int) -> None:
        self.ffmpeg = find_ffmpeg(cfg.video_ffmpeg_dir)
        self.ffmpeg_dir = cfg.video_ffmpeg_dir
        self.fps = cfg.video_fps
        self.interval_ms = cfg.video_timestamp_interval
        self.max_frames = cfg.video_max_frames
        self.timeout = cfg.video_decode_timeout
        self.max_frame_bytes = max_frame_bytes  # all frames of a video: they travel through the media arena

    @property
    def unavailable_reason(self) -> str | None:
        """Why this server cannot decode videos (a 501 to a request with one), or None."""
        if self.ffmpeg is not None:
            return None
        where = f"--video-ffmpeg-dir {self.ffmpeg_dir} has no ffmpeg" if self.ffmpeg_dir else (
            "there is no ffmpeg on PATH and the imageio-ffmpeg package is not installed")
        return (f"video input needs ffmpeg: {where} (install ffmpeg, or pip install 'ggserve[video]', "
                "or point --video-ffmpeg-dir at one)")

    def parts(self, video: MediaFile) -> list[str | MediaFile]:
        """``Video:``, then each frame (a PNG file) with the timestamp texts after them, as
        mtmd-helper's video reader orders them."""
        parts: list[str | MediaFile] = [PROMPT_START]
        next_ms = 0.0
        for i, frame in enumerate(self.frames(video)):
            parts.append(frame)
            elapsed_ms = i / self.fps * 1000.0
            if self.interval_ms > 0 and elapsed_ms >= next_ms:
                minutes = int(elapsed_ms / 60000)
                parts.append(f"[{minutes}m{elapsed_ms / 1000.0 - minutes * 60:.2f}s]")
                next_ms += self.interval_ms
        return parts

    def frames(self, video: MediaFile) -> list[MediaFile]:
        """The video's frames at ``--video-fps`` as PNG files; a 400 naming the limit it breaks."""
        if self.unavailable_reason is not None:
            raise ApiError(501, self.unavailable_reason, param=video.param)
        stream = self._run_ffmpeg(video)
        try:
            pngs = split_png_stream(stream)
        except ValueError:
            raise invalid("the video could not be decoded (ffmpeg wrote a truncated frame)",
                          param=video.param) from None
        if not pngs:
            raise invalid("the video could not be decoded: it has no video frames", param=video.param)
        if len(pngs) > self.max_frames:
            raise invalid(f"the video gives more than {self.max_frames} frames at {self.fps:g} frames a second "
                          f"(--video-max-frames; {self.max_frames / self.fps:g} s): send a shorter clip",
                          param=video.param)
        return [media_file(png, "video", video.param) for png in pngs]

    def _command(self) -> list[str]:
        assert self.ffmpeg is not None
        return [
            self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            # cache:pipe:0 lets ffmpeg seek back in what it read (an MP4's index may come last)
            "-read_ahead_limit", "-1", "-i", "cache:pipe:0",
            "-vf", f"fps={self.fps:.6f}",
            "-frames:v", str(self.max_frames + 1),  # one more than allowed: too many is then known
            "-f", "image2pipe", "-c:v", "png", "-pix_fmt", "rgb24", "pipe:1",
        ]

    def _run_ffmpeg(self, video: MediaFile) -> bytes:
        """ffmpeg's output for the file, within the time and size limits (it is killed past
        either); a 400 when it fails."""
        try:
            proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as exc:  # removed or not executable since start-up
            raise ApiError(501, f"video input needs ffmpeg, and {self.ffmpeg} does not run: {exc}",
                           param=video.param) from None
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        errors = bytearray()
        threads = [threading.Thread(target=_feed, args=(proc.stdin, video.data), daemon=True),
                   threading.Thread(target=_tail, args=(proc.stderr, errors), daemon=True)]
        timer = threading.Timer(self.timeout, expire)
        out = bytearray()
        too_large = False
        timer.start()
        for thread in threads:
            thread.start()
        try:
            while chunk := proc.stdout.read1(1 << 16):
                out += chunk
                if len(out) > self.max_frame_bytes:
                    too_large = True
                    break
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for thread in threads:
                thread.join()
            proc.stdout.close()
        if timed_out.is_set():
            raise invalid(f"decoding the video took longer than {self.timeout:g} s (--video-decode-timeout)",
                          param=video.param)
        if too_large:
            raise invalid(f"the video's frames take more than {self.max_frame_bytes} bytes as images (half a "
                          "worker's media arena: 2 x --media-max-bytes, at least 32 MiB): send a shorter or "
                          "smaller video", param=video.param)
        if proc.returncode != 0:
            lines = errors.decode(errors="replace").strip().splitlines()
            raise invalid(f"the video could not be decoded (ffmpeg: {lines[-1] if lines else proc.returncode})",
                          param=video.param)
        return bytes(out)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    """Write the file to ffmpeg's stdin (it may stop reading early, or be killed: no error here)."""
    with contextlib.suppress(OSError, ValueError), pipe:
        pipe.write(data)


def _tail(pipe: IO[bytes], keep: bytearray) -> None:
    """Read ffmpeg's error output to the end (a full pipe would stall it), keeping the last bytes."""
    while chunk := pipe.read1(1 << 12):
        keep += chunk
        del keep[:-_STDERR_KEEP]
    pipe.close()


def split_png_stream(stream: bytes) -> list[bytes]:
    """The PNG files ffmpeg's image2pipe wrote one after another; ValueError if one is cut short."""
    files = []
    start = 0
    while start < len(stream):
        if stream[start : start + 8] != _PNG_SIGNATURE:
            raise ValueError("not a PNG file")
        pos = start + 8
        while True:  # chunks: length, type, data, CRC; IEND ends the file
            if pos + 8 > len(stream):
                raise ValueError("truncated PNG file")
            length = int.from_bytes(stream[pos : pos + 4], "big")
            kind = stream[pos + 4 : pos + 8]
            pos += 12 + length
            if pos > len(stream):
                raise ValueError("truncated PNG file")
            if kind == b"IEND":
                break
        files.append(stream[start:pos])
        start = pos
    return files
