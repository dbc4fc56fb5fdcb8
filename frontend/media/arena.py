"""Media files of a worker's running requests in its shared-memory arena (ipc.shm).

The bytes of an image or audio clip go to the executor as an ``ArrayRef`` inside the request's
``MediaChunk``, never through the sockets. A request's regions are released when its generation
ends (every choice finished or aborted): the executor has read them by then, or its sequence is
gone; the executor checks the hash of what it reads, so a region reused early is never encoded
under the old hash.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from frontend.http.errors import unavailable
from frontend.text.multimodal import Span
from ipc.protocol import MediaChunk
from ipc.shm import Arena, ArenaFull, frontend_media_owner, run_id_of


def arena_bytes(max_file_bytes: int) -> int:
    """A worker's arena: room for a few requests' largest files at once (or one video's frames)."""
    return max(4 * max_file_bytes, 64 * 2**20)


class MediaArena:
    def __init__(self, run_dir: str, max_file_bytes: int) -> None:
        self._size = arena_bytes(max_file_bytes)  # the memory is reserved at creation
        self._run_id = run_id_of(run_dir)
        self._arena: Arena | None = None
        self._lock = threading.Lock()

    def _get(self) -> Arena:
        with self._lock:
            if self._arena is None:  # on first use: most servers with --mmproj see text too
                try:
                    self._arena = Arena(self._run_id, frontend_media_owner(os.getpid()), self._size)
                except OSError as exc:
                    raise unavailable(f"no shared memory for media files: {exc}") from None
            return self._arena

    def put(self, prompts: list[list[Span]]) -> list[list[MediaChunk]]:
        """Each prompt's chunks with their files in the arena (all or none); a 503 when it is full."""
        arena, chunks = self._get(), []
        try:
            for spans in prompts:
                chunks.append([])
                for span in spans:
                    ref = arena.put(np.frombuffer(span.file.data, dtype=np.uint8))
                    chunks[-1].append(MediaChunk(span.start, span.n_tokens, span.file.sha256, ref, span.n_pos,
                                                 span.part))
        except ArenaFull:
            self.release(chunks)
            raise unavailable("too many media files in flight; retry in a moment") from None
        return chunks

    def release(self, prompts: list[list[MediaChunk]]) -> None:
        arena = self._get()
        for chunks in prompts:
            for chunk in chunks:
                arena.release(chunk.data)

    def close(self) -> None:
        if self._arena is not None:
            self._arena.close()
            self._arena.unlink()
