"""Sequences' KV state kept in host memory (llama-server's --cache-ram), by entry id.

When the scheduler evicts an idle cached prefix from the KV cache it may ask for its cells to be
saved here first (``llama_state_seq_get_data``: every layer's cells of the sequence, including
the sliding-window ones that make a prefix reusable on models such as Gemma 3), and later
restored into an empty sequence (``llama_state_seq_set_data``) instead of recomputed. The
scheduler decides what is kept within its memory budget; this module only stores bytes.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp

log = logging.getLogger("executor")


class HostCache:
    def __init__(self, ctx: llama_cpp.llama_context_p) -> None:
        self._ctx = ctx
        self._entries: dict[int, ctypes.Array[ctypes.c_uint8]] = {}

    def save(self, seq_id: int, entry_id: int) -> int:
        """Copy the sequence out to host memory; its size in bytes (0 when it failed)."""
        size = llama_cpp.llama_state_seq_get_size(self._ctx, seq_id)
        buf = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ctx, buf, size, seq_id) != size:
            log.warning("could not save sequence %d to host memory", seq_id)
            return 0  # a later restore of this entry reports the failure
        self._entries[entry_id] = buf
        return size

    def restore(self, entry_id: int, seq_id: int) -> bool:
        """Load an entry into the (empty) sequence; False if it is missing or llama.cpp refuses."""
        buf = self._entries.get(entry_id)
        return buf is not None and llama_cpp.llama_state_seq_set_data(self._ctx, buf, len(buf), seq_id) > 0

    def drop(self, entry_id: int) -> None:
        self._entries.pop(entry_id, None)
