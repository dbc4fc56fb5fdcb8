"""Media a request sends (images, audio, video): fetched, decoded from base64, sized and sniffed.

What comes out is a ``MediaFile``: the file's bytes as the client sent them, whether they are an
image, audio or a video, and their SHA-256 (the prefix cache and the executor's encoder cache key
media by it). Every problem is a 400 naming the part: not base64, an unsupported format, larger
than ``--media-max-bytes``, a remote URL without ``--allow-remote-media``, a file:// path
without ``--media-path`` or outside it, a kind of media the
projector has no encoder for (a video needs the image encoder: its frames are images); a video
to a server without ffmpeg is a 501. Whether the bytes really decode is mtmd's (or ffmpeg's) to
say, when the prompt is tokenized (frontend.text.multimodal, frontend.media.video).

Image and audio formats are those llama.cpp's mtmd decodes without ffmpeg: images through
stb_image (PNG, JPEG, GIF, BMP), audio through miniaudio (WAV, MP3, FLAC). Videos are the
containers ffmpeg reads that are recognised by their first bytes: MP4 / MOV, WebM / Matroska,
AVI, MPEG transport and program streams, FLV.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from frontend.api.schemas import AudioPart, ChatMessage, ImagePart, MediaPart, VideoPart
from frontend.http.errors import ApiError, invalid
from ggserve.config import ServeConfig

_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"GIF87a": "gif", b"GIF89a": "gif", b"BM": "bmp"}
_AUDIO_MAGIC = {b"ID3": "mp3", b"fLaC": "flac"}
_VIDEO_MAGIC = {b"\x1a\x45\xdf\xa3": "webm", b"FLV\x01": "flv", b"\x00\x00\x01\xba": "mpeg"}
# ISO media files (an "ftyp" box first) that hold pictures or sound only, not video
_NOT_VIDEO_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"M4A ", b"M4B ", b"M4P ")
_READ_BYTES = 64 * 1024  # a fetch's read at most
_TS_PACKET = 188  # an MPEG transport stream: a sync byte every 188 bytes


@dataclass(frozen=True)
class MediaFile:
    data: bytes
    kind: str  # "image", "audio" or "video" (a video's frames, too: PNG files)
    sha256: str
    param: str  # where the request had it, for error messages


def media_file(data: bytes, kind: str, param: str) -> MediaFile:
    return MediaFile(data, kind, hashlib.sha256(data).hexdigest(), param)


def sniff(data: bytes) -> tuple[str, str] | None:
    """(kind, format) from the file's first bytes; None for a format mtmd cannot read."""
    for magic, fmt in _IMAGE_MAGIC.items():
        if data.startswith(magic):
            return "image", fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio", "wav"
    for magic, fmt in _AUDIO_MAGIC.items():
        if data.startswith(magic):
            return "audio", fmt
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:  # an MPEG audio frame
        return "audio", "mp3"
    if data[4:8] == b"ftyp" and data[8:12] not in _NOT_VIDEO_BRANDS:
        return "video", "mp4"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "video", "avi"
    for magic, fmt in _VIDEO_MAGIC.items():
        if data.startswith(magic):
            return "video", fmt
    if len(data) > 2 * _TS_PACKET and data[0] == data[_TS_PACKET] == data[2 * _TS_PACKET] == 0x47:
        return "video", "mpegts"
    return None


def describe(data: bytes) -> str:
    """What an unreadable file looks like, for the error message."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypavif", b"ftypheic", b"ftypmif1"):
        return "AVIF/HEIC"
    if data.lstrip()[:5] in (b"<?xml", b"<svg ") or data.lstrip()[:4] == b"<svg":
        return "SVG"
    return "not an image or audio file"


class MediaLimits:
    """The server's media settings and what its projector can encode."""

    def __init__(self, cfg: ServeConfig, vision: bool, audio: bool, no_video: str | None) -> None:
        self.max_bytes = cfg.media_max_bytes
        self.allow_remote = cfg.allow_remote_media
        self.fetch_timeout = cfg.media_fetch_timeout
        self.media_path = cfg.media_path  # --media-path: the directory file:// URLs read from ("": off)
        self.vision = vision
        self.audio = audio
        self.no_video = no_video  # why this server cannot decode videos (no ffmpeg), or None
        self.mmproj = bool(cfg.mmproj)


def _check_size(n: int, param: str, limits: MediaLimits) -> None:
    if n > limits.max_bytes:
        raise invalid(f"the media file is {n} bytes; this server accepts at most {limits.max_bytes} "
                      "(--media-max-bytes)", param=param)


def _b64(text: str, param: str, limits: MediaLimits) -> bytes:
    _check_size(len(text) * 3 // 4 - 2, param, limits)  # before decoding a huge string
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("the media data is not valid base64", param=param) from None


def _from_data_uri(url: str, param: str, limits: MediaLimits) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise invalid("a data: URI must be base64 (data:<type>;base64,<data>)", param=param)
    return _b64(payload, param, limits)


def _fetch(url: str, param: str, limits: MediaLimits) -> bytes:
    """GET ``url`` with the time and size limits (blocking: run it in a thread)."""
    request = urllib.request.Request(url, headers={"User-Agent": "ggserve"})
    # The socket's timeout bounds each read; the deadline the whole body (a server dripping a byte
    # at a time would hold the fetch, and a thread, for as long as it likes).
    deadline = time.monotonic() + limits.fetch_timeout
    try:
        with urllib.request.urlopen(request, timeout=limits.fetch_timeout) as response:
            parts, size = [], 0
            while size <= limits.max_bytes and (part := response.read1(_READ_BYTES)):
                if time.monotonic() > deadline:
                    raise invalid(f"fetching the media URL took over {limits.fetch_timeout:g}s "
                                  "(--media-fetch-timeout)", param=param)
                parts.append(part)
                size += len(part)
            data = b"".join(parts)
    except urllib.error.HTTPError as exc:
        raise invalid(f"fetching the media URL failed: HTTP {exc.code}", param=param) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise invalid(f"fetching the media URL failed: {reason}", param=param) from None
    _check_size(len(data), param, limits)
    return data


def _local(url: str, param: str, limits: MediaLimits) -> bytes:
    """A file:// URL: a path relative to --media-path that stays inside it (no absolute path,
    no .., no link leading out), as llama-server allows them."""
    if not limits.media_path:
        raise invalid("file:// URLs are not allowed unless the server has --media-path", param=param)
    relative = urllib.parse.unquote(url[len("file://"):])
    root = os.path.realpath(limits.media_path)
    path = os.path.realpath(os.path.join(root, relative))
    if not relative or os.path.isabs(relative) or os.path.commonpath([root, path]) != root:
        raise invalid(f"file path is not allowed: {relative!r} (a path inside --media-path)", param=param)
    try:
        size = os.path.getsize(path)
        _check_size(size, param, limits)
        with open(path, "rb") as f:
            return f.read(limits.max_bytes + 1)
    except OSError:
        raise invalid(f"file does not exist or cannot be opened: {relative!r}", param=param) from None


async def _url_bytes(url: str, kind: str, param: str, limits: MediaLimits) -> bytes:
    """A part's data: URI, http(s) URL or file:// path under --media-path; a video part may
    also be bare base64 (llama-server's last resort for any media value)."""
    if url.startswith("data:"):
        return _from_data_uri(url, param, limits)
    if url.startswith("file://"):
        return await asyncio.to_thread(_local, url, param, limits)
    if url.startswith(("http://", "https://")):
        if not limits.allow_remote:
            raise invalid(f"remote media URLs are off on this server (--allow-remote-media); send the {kind} "
                          "as a data: URI", param=param)
        return await asyncio.to_thread(_fetch, url, param, limits)
    if kind == "video":
        return _b64(url, param, limits)
    raise invalid("image_url.url must be a data: URI (or http(s) with --allow-remote-media, file:// with "
                  "--media-path)", param=param)


def _check_server(param: str, limits: MediaLimits) -> None:
    if not limits.mmproj:
        raise invalid("this server does not accept images or audio: start it with --mmproj and the model's "
                      "projector file", param=param)


async def load(part: MediaPart, param: str, limits: MediaLimits) -> MediaFile:
    """The checked file of one content part."""
    _check_server(param, limits)
    if isinstance(part, ImagePart):
        return checked(await _url_bytes(part.image_url.url, "image", param, limits), "image", param, limits)
    if isinstance(part, AudioPart):
        return checked(_b64(part.input_audio.data, param, limits), "audio", param, limits)
    source = part.input_video if isinstance(part, VideoPart) else part.video_url
    return checked(await _url_bytes(source.source, "video", param, limits), "video", param, limits)


def load_base64(data: str, param: str, limits: MediaLimits) -> MediaFile:
    """The checked file of llama-server's ``multimodal_data`` entry (an image, audio or a video)."""
    _check_server(param, limits)
    return checked(_b64(data, param, limits), None, param, limits)


def checked(data: bytes, want: str | None, param: str, limits: MediaLimits) -> MediaFile:
    """``data`` as a MediaFile if it is media this server can encode (of kind ``want`` if given)."""
    _check_size(len(data), param, limits)
    found = sniff(data)
    if found is None:
        raise invalid(f"unsupported media format ({describe(data)}); images: PNG, JPEG, GIF, BMP; audio: WAV, "
                      "MP3, FLAC; video: MP4, MOV, WebM, MKV, AVI, MPEG, FLV", param=param)
    kind, fmt = found
    if want is not None and kind != want:
        raise invalid(f"the {want} part holds {kind} ({fmt})", param=param)
    if kind in ("image", "video") and not limits.vision:
        reason = " (a video's frames go to it as images)" if kind == "video" else ""
        raise invalid(f"the model's projector (--mmproj) has no image encoder{reason}", param=param)
    if kind == "audio" and not limits.audio:
        raise invalid("the model's projector (--mmproj) has no audio encoder", param=param)
    if kind == "video" and limits.no_video is not None:
        raise ApiError(501, limits.no_video, param=param)
    return media_file(data, kind, param)


async def load_messages(messages: list[ChatMessage], limits: MediaLimits) -> list[MediaFile]:
    """The media parts of a conversation in prompt order (each becomes one marker there)."""
    files = []
    for i, message in enumerate(messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if isinstance(part, MediaPart):
                    files.append(await load(part, f"messages[{i}].content[{j}]", limits))
    return files
