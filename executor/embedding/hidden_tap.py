"""Embeddings without the output layer: read the final hidden states mid-graph and stop there.

With embeddings on, llama.cpp makes every token an output, and a causal LM's graph then runs its
output layer (vocabulary x width: 262k x 640 on Gemma 3) over every token, although pooling reads
only the hidden states before it (the node ``result_norm``, which llama.cpp pools from). On the
embedded model that layer is more than half of each decode. llama.cpp's graph-evaluation callback
(``cb_eval``) lets the caller observe a named node: the tap copies ``result_norm`` when ggml has
computed it and tells ggml's scheduler to stop the graph there, and the pooling (mean, cls, last;
or every row for pooling none) is done in numpy by the caller. llama.cpp still copies its logits
and pooled rows out of the stopped graph; nobody reads them.

That this is right for a model is checked, not assumed: at start-up
``executor.embedding.embedder.tap_for`` decodes a few short sequences in a small context with a
tap that observes without stopping, and a tap is used only if its rows pooled in numpy match
llama.cpp's own and the graph has an output layer after ``result_norm`` (``result_output``; an
encoder like BERT has none, so there is nothing to skip). Reranking (a classification head after
the pooling) never uses it.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
from llama_cpp._ggml import libggml  # ggml's C API, loaded by llama-cpp-python itself

HIDDEN_NODE = b"result_norm"  # llama.cpp's name for the pooled-from hidden states (res->t_embd)
# with pooling none, llama.cpp's pooling step renames that same tensor as its output
HIDDEN_NODE_UNPOOLED = b"result_embd_pooled"
OUTPUT_NODE = b"result_output"  # the output layer's result, computed after it
GGML_TYPE_F32 = 0
POOLINGS = {llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            llama_cpp.LLAMA_POOLING_TYPE_CLS, llama_cpp.LLAMA_POOLING_TYPE_LAST}

libggml.ggml_get_name.restype = ctypes.c_char_p
libggml.ggml_get_name.argtypes = [ctypes.c_void_p]
libggml.ggml_backend_tensor_get.restype = None
libggml.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]


class _TensorHead(ctypes.Structure):
    """The first fields of ``struct ggml_tensor`` (ggml.h), enough for the type and shape."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4)]


class HiddenTap:
    """Copies each micro-batch's ``result_norm`` rows into ``rows`` and (``stop``) ends the graph."""

    def __init__(self, n_rows: int, width: int, stop: bool, node: bytes = HIDDEN_NODE) -> None:
        self.node = node
        self.buf = np.empty((n_rows, width), dtype=np.float32)
        self.width = width
        self.stop = stop
        self.n = 0  # rows copied since begin()
        self.stopped = False  # a graph was stopped: llama.cpp's own output of this decode is void
        self.saw_output = False  # the graph went on to the output layer (probe only)
        self.problem: str | None = None
        # kept referenced: ggml calls it for as long as the context lives
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_node)

    def begin(self) -> None:
        self.n, self.stopped, self.problem = 0, False, None

    @property
    def rows(self) -> np.ndarray:
        return self.buf[:self.n]

    def _on_node(self, tensor: int, ask: bool, _user: int) -> bool:
        # ask: "do you want this node's data?" (True splits the graph there); then, once computed,
        # the answer is whether to go on. An exception must not escape into C: note it and go on,
        # so that the decode completes normally and the caller uses llama.cpp's output.
        try:
            name = libggml.ggml_get_name(tensor)
            if ask:
                self.saw_output = self.saw_output or name == OUTPUT_NODE
                return name == self.node
            if name != self.node:
                return True
            return not self._copy(tensor)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            self.problem = repr(exc)
            return True

    def _copy(self, tensor: int) -> bool:
        """Copy the node's rows; whether the graph may stop here."""
        head = _TensorHead.from_address(tensor)
        width, n_rows = head.ne[0], head.ne[1]
        if head.type != GGML_TYPE_F32 or width != self.width or head.ne[2] * head.ne[3] != 1 \
                or self.n + n_rows > len(self.buf):
            self.problem = f"unexpected {self.node.decode()}: type {head.type}, shape {list(head.ne)}"
            return False
        libggml.ggml_backend_tensor_get(tensor, self.buf[self.n:].ctypes.data, 0, n_rows * width * 4)
        self.n += n_rows
        self.stopped = self.stop
        return self.stop


def pool(rows: np.ndarray, lengths: list[int], pooling: int) -> np.ndarray:
    """llama.cpp's pooling of whole sequences laid out one after another: one row per sequence
    (mean, first token, last token), or every row (none)."""
    if pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE:
        return rows
    starts = np.cumsum([0, *lengths[:-1]])
    if pooling == llama_cpp.LLAMA_POOLING_TYPE_MEAN:
        return np.add.reduceat(rows, starts, axis=0) / np.asarray(lengths, dtype=np.float32)[:, None]
    if pooling == llama_cpp.LLAMA_POOLING_TYPE_CLS:
        return rows[starts]
    return rows[starts + np.asarray(lengths) - 1]  # last


def hidden_node(pooling: int) -> bytes:
    return HIDDEN_NODE_UNPOOLED if pooling == llama_cpp.LLAMA_POOLING_TYPE_NONE else HIDDEN_NODE
