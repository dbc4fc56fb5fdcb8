"""Prompts with media: text with one marker per file -> prompt ids and media chunks.

Each HTTP worker loads the projector (``--mmproj``) on the CPU beside its vocab-only model, the
way it tokenizes text without asking the engine: mtmd decides how many embeddings a file takes
(on some models it depends on the image's size) and which text it wraps them in (Gemma 3's
``<start_of_image>``), and reports a file that does not decode here, as a 400, before the engine
sees it. The cost is the projector's weights once per worker, in host memory.

A chunk's positions carry ``media_token_id(sha256)`` in the prompt (see ipc.protocol.MediaChunk).
A video becomes llama-server's text and frames first (frontend.media.video): each frame is an image chunk.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ggserve.llama import projector
from ggserve.llama.projector import MediaError
from frontend.http.errors import ApiError, invalid
from frontend.media.files import MediaFile
from frontend.text.tokenizer import Tokenizer
from frontend.media.video import VideoDecoder
from ipc.protocol import media_token_id

MARKER = projector.marker().decode()


@dataclass(frozen=True)
class Span:
    start: int
    n_tokens: int
    file: MediaFile
    n_pos: int  # positions it advances (ipc.protocol.MediaChunk.n_pos)
    part: int = 0  # which of its file's chunks (ipc.protocol.MediaChunk.part)


@dataclass(frozen=True)
class MediaPrompt:
    tokens: list[int]  # vocabulary ids, and each chunk's media id at its positions
    spans: list[Span]  # in prompt order


def check_chunks(spans: list[Span], n_ctx_slot: int) -> None:
    """A media chunk goes into the KV cache whole: one that a request's context cannot hold is a
    400 naming its part and both sizes (the engine would refuse it too)."""
    for span in spans:
        if span.n_tokens >= n_ctx_slot:
            what = "a frame of the video" if span.file.kind == "video" else f"the {span.file.kind}"
            raise ApiError(400, f"{what} takes {span.n_tokens} embeddings at once; a slot's context holds "
                                f"{n_ctx_slot} tokens, prompt and reply together: increase the context size",
                           type="exceed_context_size_error", param=span.file.param,
                           extra={"n_chunk_tokens": span.n_tokens, "n_ctx": n_ctx_slot})


class MediaTokenizer:
    def __init__(self, tokenizer: Tokenizer, mmproj: str, video: VideoDecoder,
                 image_tokens: tuple[int, int] = (-1, -1)) -> None:
        self._ctx, self.info = projector.load(mmproj, tokenizer.model, use_gpu=False, n_threads=1, warmup=False,
                                              image_tokens=image_tokens)
        self._lock = threading.Lock()  # one mtmd context; prompts may be tokenized in threads
        self.video = video  # a video becomes text and frames (images) here, as in llama-server

    def close(self) -> None:
        projector.free(self._ctx)

    def tokenize(self, text: str, files: list[MediaFile], param: str, add_special: bool,
                 parse_special: bool = True) -> MediaPrompt:
        """The prompt ``text`` (one MARKER per file, in order) as ids and chunks; a 400 for a file
        that does not decode or a marker count that does not match (naming ``param``)."""
        try:
            parts = projector.interleave(text, files)
        except MediaError as exc:
            raise invalid(str(exc), param=param) from None
        expanded: list[str | MediaFile] = []
        for part in parts:  # ffmpeg runs here, outside the lock
            is_video = isinstance(part, MediaFile) and part.kind == "video"
            expanded += self.video.parts(part) if is_video else [part]
        media = [part for part in expanded if isinstance(part, MediaFile)]
        tokens: list[int] = []
        spans: list[Span] = []
        with self._lock:
            try:
                with projector.chunks_of_parts(self._ctx, [p.data if isinstance(p, MediaFile) else p for p in expanded],
                                               add_special, parse_special) as chunks:
                    for chunk in chunks:
                        if projector.is_text(chunk):
                            tokens += projector.text_tokens(chunk)
                            continue
                        file = media[projector.file_index(chunk)]
                        part = sum(span.file is file for span in spans)  # a long audio clip: several
                        n = projector.n_embeddings(chunk)
                        spans.append(Span(len(tokens), n, file, projector.n_positions(chunk), part))
                        tokens += [media_token_id(file.sha256)] * n
            except MediaError as exc:
                if exc.index is None:
                    raise invalid(str(exc), param=param) from None
                file = media[exc.index]
                raise invalid(f"the {file.kind} could not be decoded (a broken or truncated file?)",
                              param=file.param) from None
        return MediaPrompt(tokens, spans)
