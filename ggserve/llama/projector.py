"""llama.cpp's mtmd (multimodal projector) behind three calls, for the frontend and the executor.

Both load the same ``--mmproj``: the frontend to split a prompt into text tokens and media chunks
(and count each chunk's embeddings and positions: they vary with the image's size on some
models), the executor to encode the chunks. Both run the same preprocessing on the same bytes, so
they agree on counts.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

T = TypeVar("T")


class MediaError(Exception):
    """A media file could not be decoded, preprocessed or encoded; ``index``: which one, if known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class ProjectorInfo:
    vision: bool
    audio: bool
    non_causal: bool  # decode images with bidirectional attention (Gemma 3)
    # M-RoPE (Qwen2-VL family): an embedding has 4 positions (time, row, column, unused), and an
    # image advances its sequence by fewer positions than it takes KV cells (executor.media.positions)
    mrope: bool


def load(path: str, model: llama_cpp.llama_model_p, use_gpu: bool, n_threads: int,
         warmup: bool, image_tokens: tuple[int, int] = (-1, -1),
         batch_max_tokens: int = 0) -> tuple[mtmd.mtmd_context_p, ProjectorInfo]:
    """An mtmd context for ``model`` (a vocab-only model is enough to tokenize); ``image_tokens``:
    the least and most embeddings an image may take on models that resize pictures to a token
    budget (-1: the model's), the frontend and the executors must pass the same;
    ``batch_max_tokens``: embeddings encoded per batch (0: mtmd's default). RuntimeError says
    what is wrong."""
    params = mtmd.mtmd_context_params_default()
    params.use_gpu = use_gpu
    params.n_threads = n_threads
    params.warmup = warmup
    params.image_min_tokens, params.image_max_tokens = image_tokens
    if batch_max_tokens > 0:
        params.batch_max_tokens = batch_max_tokens
    ctx = mtmd.mtmd_init_from_file(path.encode(), model, params)
    if not ctx:
        raise RuntimeError(f"cannot load the multimodal projector {path} for this model "
                           "(not an mmproj GGUF, or one made for another model: see the log)")
    info = ProjectorInfo(bool(mtmd.mtmd_support_vision(ctx)), bool(mtmd.mtmd_support_audio(ctx)),
                         bool(mtmd.mtmd_decode_use_non_causal(ctx, None)), bool(mtmd.mtmd_decode_use_mrope(ctx)))
    return ctx, info


def free(ctx: mtmd.mtmd_context_p) -> None:
    mtmd.mtmd_free(ctx)


@contextlib.contextmanager
def chunks_of(ctx: mtmd.mtmd_context_p, text: bytes, files: list[bytes], add_special: bool = False,
              parse_special: bool = True) -> Iterator[list[mtmd.mtmd_input_chunk_p]]:
    """mtmd's chunks of ``text`` with one media marker per file, freed on exit. MediaError names
    the file that does not decode."""
    with chunks_of_parts(ctx, interleave(text.decode(errors="replace"), files), add_special, parse_special) as chunks:
        yield chunks


def interleave(text: str, files: list[T]) -> list[str | T]:
    """The texts between ``text``'s media markers, each marker replaced by its file (what
    mtmd_tokenize makes of them: the texts are tokenized apart); MediaError unless there is
    one marker per file."""
    pieces = text.split(marker().decode())
    if len(pieces) != len(files) + 1:  # checked here: mtmd's return codes do not tell this apart
        raise MediaError(f"the prompt has {len(pieces) - 1} media markers ({marker().decode()}) for {len(files)} "
                         "media files; each file needs one")
    parts: list[str | T] = [pieces[0]]
    for file, piece in zip(files, pieces[1:]):
        parts += [file, piece]
    return parts


@contextlib.contextmanager
def chunks_of_parts(ctx: mtmd.mtmd_context_p, parts: list[str | bytes], add_special: bool = False,
                    parse_special: bool = True) -> Iterator[list[mtmd.mtmd_input_chunk_p]]:
    """mtmd's chunks of ``parts`` (texts, and media files as bytes), each text tokenized on its
    own, freed on exit. MediaError names the file that does not decode (its index among the files)."""
    bitmaps = []
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        for i, data in enumerate(p for p in parts if isinstance(p, bytes)):
            buf = (ctypes.c_ubyte * len(data)).from_buffer_copy(data)
            bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(data), False)
            if not bitmap:
                raise MediaError(f"media file {i} could not be decoded", i)
            mtmd.mtmd_bitmap_set_id(bitmap, str(i).encode())  # its chunks say which file they are of
            bitmaps.append(bitmap)
        files = iter(bitmaps)
        inputs = []
        for part in parts:
            inp = mtmd.mtmd_input_part()
            if isinstance(part, str):
                text = mtmd.mtmd_input_text()
                text.text = encoded = part.encode()
                text.text_len, text.add_special, text.parse_special = len(encoded), False, parse_special
                inp.text = ctypes.pointer(text)
            else:
                inp.bitmap = next(files)
            inputs.append(ctypes.pointer(inp))
        array = (ctypes.POINTER(mtmd.mtmd_input_part) * max(1, len(inputs)))(*inputs)
        rc = mtmd.mtmd_tokenize_from_parts(ctx, chunks, array, len(inputs), add_special)
        if rc != 0:
            raise MediaError(f"a media file could not be preprocessed (mtmd_tokenize returned {rc})")
        yield [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))]
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        for bitmap in bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)


def file_index(chunk: mtmd.mtmd_input_chunk_p) -> int:
    """Which of chunks_of_parts' files a media chunk is (one file may give several chunks: mtmd
    cuts audio into 30 s windows)."""
    return int(mtmd.mtmd_input_chunk_get_id(chunk))


def is_text(chunk: mtmd.mtmd_input_chunk_p) -> bool:
    return mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT


def text_tokens(chunk: mtmd.mtmd_input_chunk_p) -> list[int]:
    n = ctypes.c_size_t()
    tokens = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
    return tokens[: n.value]


def n_embeddings(chunk: mtmd.mtmd_input_chunk_p) -> int:
    return mtmd.mtmd_input_chunk_get_n_tokens(chunk)


def n_positions(chunk: mtmd.mtmd_input_chunk_p) -> int:
    """How far the chunk advances its sequence's position: its embeddings, except for an M-RoPE
    image (max(rows, columns) of its grid)."""
    return mtmd.mtmd_input_chunk_get_n_pos(chunk)


def mrope_positions(chunk: mtmd.mtmd_input_chunk_p, n: int) -> np.ndarray:
    """The M-RoPE positions of the chunk's ``n`` embeddings as (2, 4, n) int32: ``[0]`` for a
    chunk starting at position 0 and ``[1]`` what each unit of its first position adds, per
    section (time, row, column, unused), so a chunk at ``p`` has ``[0] + p * [1]``. mtmd defines
    them per position (an image's time, row and column move with it, its fourth section does
    not; audio counts up in every section), so they are read from it at 0 and 1."""
    at = np.zeros((2, 4, n), np.int32)
    image = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
    if not image:  # audio (mtmd-helper's set_position_mrope_1d)
        at[0] = np.arange(n, dtype=np.int32)
        at[1] = at[0] + 1
    else:
        for p0 in (0, 1):
            out = (mtmd.mtmd_decoder_pos * n)()
            mtmd.mtmd_helper_image_get_decoder_pos(image, p0, out)
            grid = np.ctypeslib.as_array(ctypes.cast(out, ctypes.POINTER(ctypes.c_uint32)), shape=(n, 4))
            at[p0] = grid[:, [0, 2, 1, 3]].T  # struct order t, x, y, z; sections t, y, x, z
    at[1] -= at[0]
    return at


def marker() -> bytes:
    """The text that stands for one media file in a prompt (llama.cpp's ``<__media__>``)."""
    return mtmd.mtmd_default_marker()
