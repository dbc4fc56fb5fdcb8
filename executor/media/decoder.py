"""Images and audio in prompts: encode media chunks with mtmd and decode their embeddings.

The frontend put each file's bytes in its shared-memory arena and counted the chunk's embeddings
with its own mtmd context; here the same projector encodes the file again (same bytes, same
preprocessing: the same count) and the embeddings go to ``llama_decode`` through a batch with
``embd`` set. A chunk is decoded whole in a decode of its own (one micro-batch), at positions
``pos .. pos + n_tokens - 1``, with non-causal attention where the model wants it (Gemma 3
attends bidirectionally within an image). Encoded chunks are kept by content hash (bounded), so
a second request with the same picture skips the encoder even when its prefix is not cached.

M-RoPE projectors (Qwen2-VL and relatives): each embedding has 4 positions (time, row, column,
unused) as mtmd lays them out, from the chunk's first llama.cpp position, which
``executor.media.positions`` maps from the scheduler's token index.
"""

from __future__ import annotations

import collections
import hashlib
import logging

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from ggserve.llama import projector
from executor.batch import NoKvRoom, NumpyBatch
from executor.media.positions import SeqPositions
from ggserve.llama.projector import MediaError
from ipc.protocol import BatchItem, EngineError, ErrorCode, MediaChunk
from ipc.shm import ArenaReader

log = logging.getLogger(__name__)

EMBEDDING_CACHE_BYTES = 256 * 2**20  # encoded chunks kept by hash (a Gemma 3 4B image: 2.6 MB)


class MediaDecoder:
    """The executor's media: each sequence's chunks, the encoder, and an embeddings batch."""

    def __init__(self, path: str, model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p,
                 use_gpu: bool, n_threads: int, n_ubatch: int, image_tokens: tuple[int, int],
                 batch_max_tokens: int) -> None:
        self.mtmd, self.info = projector.load(path, model, use_gpu, n_threads, warmup=True, image_tokens=image_tokens,
                                              batch_max_tokens=batch_max_tokens)
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_embd = llama_cpp.llama_model_n_embd(model)
        self.n_ubatch = n_ubatch
        self.reader = ArenaReader()
        self.chunks: dict[int, dict[int, MediaChunk]] = {}  # seq -> start -> chunk
        # (sha256, part) -> (embeddings, M-RoPE positions: projector.mrope_positions, or None)
        self.cache: collections.OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = (
            collections.OrderedDict())
        self.cache_bytes = 0
        self.decoded: list[BatchItem] = []  # this step's chunks in the cache (undone if it is refused)
        self.positions = SeqPositions() if self.info.mrope else None
        self.batch = NumpyBatch(n_ubatch, self.n_embd, 4 if self.info.mrope else 1)

    def start(self, seq_id: int, media: list[MediaChunk]) -> None:
        """A request starts on ``seq_id`` with these chunks (none: a text request)."""
        if media:
            self.chunks[seq_id] = {chunk.start: chunk for chunk in media}
        else:
            self.chunks.pop(seq_id, None)
        if self.positions is not None:
            self.positions.start(seq_id, media)

    def run(self, items: list[BatchItem], failures: dict[int, EngineError]) -> list[BatchItem]:
        """Decode the items that are media chunks (each alone); the text items, to batch.
        NoKvRoom (with none of the step's chunks left in the cache) when one finds no room: the
        scheduler plans the step again, as it does when the text batch finds none."""
        text: list[BatchItem] = []
        self.decoded = []
        for item in items:
            if not item.token_ids or item.token_ids[0] >= 0:
                text.append(item)
            elif item.seq_id not in failures:
                try:
                    self._decode(item)
                    self.decoded.append(item)
                except MediaError as exc:
                    log.warning("sequence %d: %s", item.seq_id, exc)
                    failures[item.seq_id] = EngineError(ErrorCode.INVALID_REQUEST, str(exc))
        return text

    def _decode(self, item: BatchItem) -> None:
        chunk = self.chunks.get(item.seq_id, {}).get(item.pos)
        n = len(item.token_ids)
        if chunk is None or chunk.n_tokens != n or item.sample:
            raise MediaError(f"invalid plan: no media chunk of {n} positions at {item.pos}")
        if n > self.n_ubatch:
            raise MediaError(f"a media chunk of {n} embeddings exceeds the micro-batch ({self.n_ubatch})")
        embd, mrope = self._embeddings(chunk)
        if self.positions is None:
            positions = np.arange(item.pos, item.pos + n, dtype=np.int32)[None]
        else:
            assert mrope is not None
            positions = mrope[0] + self.positions.position(item.seq_id, item.pos) * mrope[1]
        self.batch.fill_embeddings(item.seq_id, embd, positions)
        if self.info.non_causal:
            llama_cpp.llama_set_causal_attn(self.ctx, False)
        try:
            rc = llama_cpp.llama_decode(self.ctx, self.batch.struct)
        finally:
            if self.info.non_causal:
                llama_cpp.llama_set_causal_attn(self.ctx, True)
        if rc == 1:  # the cache is as it was: the chunk waits for room, its request goes on
            self.undo()
            raise NoKvRoom()
        if rc != 0:
            raise MediaError(f"llama_decode of a media chunk returned {rc}")

    def undo(self) -> None:
        """Remove the chunks this step decoded from the cache (the step is refused and planned again)."""
        for item in self.decoded:
            start = item.pos if self.positions is None else self.positions.position(item.seq_id, item.pos)
            llama_cpp.llama_memory_seq_rm(self.memory, item.seq_id, start, -1)
        self.decoded = []

    def _embeddings(self, chunk: MediaChunk) -> tuple[np.ndarray, np.ndarray | None]:
        key = (chunk.sha256, chunk.part)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            return cached
        try:
            data = self.reader.get(chunk.data).tobytes()
        except (OSError, TypeError) as exc:  # its writer is gone: the segment unlinked, or another in its name
            raise MediaError(f"the media file is gone (request gone?): {exc}") from None
        # The frontend frees the region when its request ends: bytes of another file there must
        # never be cached under this hash.
        if hashlib.sha256(data).hexdigest() != chunk.sha256:
            raise MediaError("the media file changed before it was encoded (request gone?)")
        encoded = self._encode(data, chunk)
        self.cache[key] = encoded
        self.cache_bytes += encoded[0].nbytes
        while self.cache_bytes > EMBEDDING_CACHE_BYTES and len(self.cache) > 1:
            _, (old, _) = self.cache.popitem(last=False)
            self.cache_bytes -= old.nbytes
        return encoded

    def _encode(self, data: bytes, chunk: MediaChunk) -> tuple[np.ndarray, np.ndarray | None]:
        n_tokens = chunk.n_tokens
        with projector.chunks_of(self.mtmd, projector.marker(), [data]) as chunks:
            media = [c for c in chunks if not projector.is_text(c)]
            if (len(media) <= chunk.part or projector.n_embeddings(media[chunk.part]) != n_tokens
                    or projector.n_positions(media[chunk.part]) != (chunk.n_pos or n_tokens)):
                raise MediaError("the media file gives other numbers of embeddings or positions than the "
                                 "frontend counted")
            part = media[chunk.part]  # of a long audio clip, one 30 s window
            if mtmd.mtmd_encode_chunk(self.mtmd, part) != 0:
                raise MediaError("the media encoder failed")
            out = mtmd.mtmd_get_output_embd(self.mtmd)
            embd = np.ctypeslib.as_array(out, shape=(n_tokens, self.n_embd)).copy()
            return embd, projector.mrope_positions(part, n_tokens) if self.info.mrope else None

    def close(self) -> None:
        projector.free(self.mtmd)
        self.reader.close()
