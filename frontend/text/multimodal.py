"""Prompts with media: text with one marker per file -> prompt ids and media chunks.

Each HTTP worker loads the projector (``--mmproj``) on the CPU beside its vocab-only model, the
way it tokenizes text without asking the engine: mtmd decides how many embeddings a file takes
(on some models it depends on the image's size) and which text it wraps them in (Gemma 3's
``<start_of_image>``), and reports a file that does not decode here, as a 400, before the engine
sees it. The cost is the projector's weights once per worker, in host memory.

A chunk's positions carry ``media_token_id(sha256)`` in the prompt (see ipc.protocol.MediaChunk).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from executor import projector
from executor.projector import MediaError
from frontend.http.errors import invalid
from frontend.media import MediaFile
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import media_token_id

MARKER = projector.marker().decode()


@dataclass(frozen=True)
class Span:
    start: int
    n_tokens: int
    file: MediaFile
    n_pos: int  # positions it advances (ipc.protocol.MediaChunk.n_pos)


@dataclass(frozen=True)
class MediaPrompt:
    tokens: list[int]  # vocabulary ids, and each chunk's media id at its positions
    spans: list[Span]  # in prompt order


class MediaTokenizer:
    def __init__(self, tokenizer: Tokenizer, mmproj: str) -> None:
        self._ctx, self.info = projector.load(mmproj, tokenizer.model, use_gpu=False, n_threads=1, warmup=False)
        self._lock = threading.Lock()  # one mtmd context; prompts may be tokenized in threads

    def close(self) -> None:
        projector.free(self._ctx)

    def tokenize(self, text: str, files: list[MediaFile], param: str, add_special: bool,
                 parse_special: bool = True) -> MediaPrompt:
        """The prompt ``text`` (one MARKER per file, in order) as ids and chunks; a 400 for a file
        that does not decode or a marker count that does not match (naming ``param``)."""
        tokens: list[int] = []
        spans: list[Span] = []
        with self._lock:
            try:
                with projector.chunks_of(self._ctx, text.encode(), [f.data for f in files], add_special,
                                         parse_special) as chunks:
                    for chunk in chunks:
                        if projector.is_text(chunk):
                            tokens += projector.text_tokens(chunk)
                            continue
                        file = files[len(spans)]
                        n = projector.n_embeddings(chunk)
                        spans.append(Span(len(tokens), n, file, projector.n_positions(chunk)))
                        tokens += [media_token_id(file.sha256)] * n
            except MediaError as exc:
                if exc.index is None:
                    raise invalid(str(exc), param=param) from None
                file = files[exc.index]
                raise invalid(f"the {file.kind} could not be decoded (a broken or truncated file?)",
                              param=file.param) from None
        return MediaPrompt(tokens, spans)
