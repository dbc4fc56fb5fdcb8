"""One embedding call's engine request, and the vector arithmetic of the responses.

``embed`` sends one EmbedRequest (all the call's inputs: the scheduler packs them, with other
calls' inputs, into shared decodes) and waits for its one terminal output; leaving early (the
client went away) aborts it. The engine returns raw pooled vectors; normalising (OpenAI's are
unit length), Matryoshka truncation and base64 happen here.

The vectors are in the executors' shared-memory arenas (refs in the output; the bytes of any that
came inside the messages): ``read_rows`` copies them out, and the request ends with VectorsRead,
read or not, so the scheduler frees their regions. A ref the worker must not trust (its event loop
stalled: the scheduler may have freed the region) or cannot resolve (the executor restarted and
its arena is gone) fails the request with a 503, never with other rows.
"""

from __future__ import annotations

import base64

import numpy as np

from frontend.engine_client import EngineClient
from frontend.http.errors import ApiError, from_engine
from ipc.protocol import EmbedRequest, FinishReason, RequestStats, Vectors
from ipc.shm import ArenaReader


async def embed(engine: EngineClient, request_id: str, inputs: list[list[int]]) -> tuple[list[np.ndarray], RequestStats]:
    """Each input's rows (one pooled row, or one per token with pooling none) and the stats."""
    queue = engine.submit([EmbedRequest(request_id, inputs)])
    mark = engine.send_mark
    finished = False
    try:
        while True:
            out = await queue.get()
            if out.finish_reason is None:
                continue
            finished = True
            if out.finish_reason == FinishReason.ERROR:
                raise from_engine(out.error)
            if out.vectors is None or out.stats is None:
                raise ApiError(500, "the engine aborted the request")
            return read_rows(engine, out.vectors, mark), out.stats
    finally:
        if not finished:
            engine.abort([request_id])
        engine.vectors_read([request_id])
        engine.release([request_id])


def read_rows(engine: EngineClient, vectors: Vectors, mark: int) -> list[np.ndarray]:
    """Copy the rows out, checking before and after that their regions were still ours."""
    if not engine.steady_since(mark):
        raise _stale("this server worker stalled")
    try:
        rows = split_rows(vectors, engine.arena)
    except FileNotFoundError as exc:  # its segment is gone: a dead executor's, unlinked
        raise _stale(f"the executor that computed the vectors restarted ({exc})") from exc
    if not engine.steady_since(mark):
        raise _stale("this server worker stalled")
    return rows


def split_rows(vectors: Vectors, reader: ArenaReader) -> list[np.ndarray]:
    """Each input's rows, (count, dim) float32: views of private copies of their regions (one
    memcpy per region: a step's rows, the request's and its neighbours'), or of ``data``."""
    data = np.frombuffer(vectors.data, dtype="<f4").reshape(-1, vectors.dim)
    where = vectors.where or [(-1, 0)] * len(vectors.counts)
    copies = [reader.get(ref) for ref in vectors.regions]
    rows = []
    start = 0
    for (region, first), count in zip(where, vectors.counts):
        if region < 0:
            rows.append(data[start:start + count])
            start += count
        else:
            rows.append(copies[region][first:first + count])
    return rows


def _stale(why: str) -> ApiError:
    return ApiError(503, f"the vectors could not be read safely: {why}; retry the request")


def normalize(rows: np.ndarray, norm: int) -> np.ndarray:
    """llama-server's ``embd_normalize`` per row: -1 none, 0 max absolute value scaled to the
    int16 range, 2 euclidean (L2, the default), any other p the p-norm (1: taxicab)."""
    if norm < 0:
        return rows
    if norm == 0:
        scale = np.abs(rows).max(axis=-1, keepdims=True) / 32760.0
    elif norm == 2:
        scale = np.linalg.norm(rows, axis=-1, keepdims=True)
    else:  # factored by the largest value, in float64: |x| ** p overflowed for a large p (all zeros)
        peak = np.abs(rows).max(axis=-1, keepdims=True).astype(np.float64)
        ratio = np.divide(np.abs(rows), peak, out=np.zeros(rows.shape), where=peak > 0)
        scale = (peak * (ratio ** norm).sum(axis=-1, keepdims=True) ** (1.0 / norm)).astype(rows.dtype)
    return np.divide(rows, scale, out=np.zeros_like(rows), where=scale > 0)


def as_base64(row: np.ndarray) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
