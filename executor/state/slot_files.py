"""Slot save and restore (llama-server's POST /slots/{id}): a sequence's KV cells in a file.

``llama_state_seq_save_file`` writes the sequence's cells (sliding-window ones included) after
a header holding its token ids; ``load`` reads them back into an empty sequence. A save goes to
a temporary name first and is renamed into place, so a crash mid-save never leaves a truncated
file under the name a client restores. The scheduler decides which
sequence and how many cells; these functions only move bytes and report what happened.
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
import time

import llama_cpp

from ipc.protocol import EngineError, ErrorCode, SlotFileResult


def save(ctx: llama_cpp.llama_context_p, seq_id: int, path: str, tokens: list[int]) -> SlotFileResult:
    t0 = time.perf_counter()
    name = os.path.basename(path)  # errors name the file, not where the server keeps it
    # Written beside it under a short unique name (NAME.partial may pass the 255 bytes a name has;
    # servers sharing the directory may share pids), then renamed.
    try:
        fd, partial = tempfile.mkstemp(prefix=".ggserve-", suffix=".partial", dir=os.path.dirname(path))
    except OSError as exc:
        return _not_written(seq_id, name, exc.strerror)
    os.close(fd)
    try:
        ids = (llama_cpp.llama_token * len(tokens))(*tokens)
        n_bytes = llama_cpp.llama_state_seq_save_file(ctx, partial.encode(), seq_id, ids, len(tokens))
        if n_bytes == 0:
            return _not_written(seq_id, name)
        os.replace(partial, path)
    except OSError as exc:
        return _not_written(seq_id, name, exc.strerror)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return SlotFileResult(seq_id, n_bytes, (time.perf_counter() - t0) * 1e3)


def _not_written(seq_id: int, name: str, why: str | None = None) -> SlotFileResult:
    message = f"could not write {name!r}" + (f": {why}" if why else "")
    return SlotFileResult(seq_id, error=EngineError(ErrorCode.INTERNAL, message))


# A slot file: llama.cpp's header (magic, version, token count), the token ids, then the sequence's
# state as llama_state_seq_get_data writes it after its own prefix (llama-context.cpp's io_magic,
# then the sequence id).
_HEADER = struct.Struct("<III")
_STATE_PREFIX = struct.Struct("<Ii")
_STATE_MAGIC = 0xAF143CD8


def load(ctx: llama_cpp.llama_context_p, memory: llama_cpp.llama_memory_t, seq_id: int, path: str,
         max_tokens: int, n_vocab: int) -> SlotFileResult:
    """Load ``path`` into the (emptied) sequence; on any failure the sequence is left empty.

    The file is read here and its state handed to ``llama_state_seq_set_data``, whose reads stop
    at the buffer's end: ``llama_state_seq_load_file`` reads past the end of a truncated file and
    aborts the process on an assertion."""
    t0 = time.perf_counter()
    name = os.path.basename(path)
    llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return SlotFileResult(seq_id, error=EngineError(ErrorCode.NOT_FOUND, f"no slot file {name!r}"))
    except OSError as exc:
        return _refused(memory, seq_id, f"{name!r} cannot be read: {exc.strerror}")
    if len(data) < _HEADER.size:
        return _refused(memory, seq_id, f"{name!r} is not a slot file")
    magic, version, n_tokens = _HEADER.unpack_from(data)
    if (magic, version) != (llama_cpp.LLAMA_STATE_SEQ_MAGIC, llama_cpp.LLAMA_STATE_SEQ_VERSION):
        return _refused(memory, seq_id, f"{name!r} is not a slot file of this llama.cpp version")
    if n_tokens > max_tokens:
        return _refused(memory, seq_id, f"{name!r} holds {n_tokens} tokens, more than the {max_tokens} a slot holds")
    state_at = _HEADER.size + 4 * n_tokens
    if len(data) < state_at:
        return _refused(memory, seq_id, f"{name!r} is cut short")
    tokens = list(struct.unpack_from(f"<{n_tokens}i", data, _HEADER.size))
    if any(not 0 <= t < n_vocab for t in tokens):
        return _refused(memory, seq_id, f"{name!r} holds token ids outside the vocabulary")
    state = bytearray(_STATE_PREFIX.pack(_STATE_MAGIC, seq_id))
    state += memoryview(data)[state_at:]
    buffer = (ctypes.c_ubyte * len(state)).from_buffer(state)
    n_read = llama_cpp.llama_state_seq_set_data(ctx, buffer, len(state), seq_id)
    if n_read != len(state):
        return _refused(memory, seq_id, f"{name!r} is cut short, is not a slot file of this model, or the KV cache "
                        "has no room for it")
    return SlotFileResult(seq_id, len(data), (time.perf_counter() - t0) * 1e3, tokens)


def _refused(memory: llama_cpp.llama_memory_t, seq_id: int, problem: str) -> SlotFileResult:
    llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
    return SlotFileResult(seq_id, error=EngineError(ErrorCode.INVALID_REQUEST, f"unable to restore: {problem}"))
