"""Slots: the sequences of an executor's KV cache, and what each one holds."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from scheduler.request import NO_KEY, CacheKey, Request


_origins = itertools.count(1)


def new_origin() -> int:
    """A name for cells no slot has written yet."""
    return next(_origins)


@dataclass(eq=False)
class Slot:
    executor_id: int
    seq_id: int
    request: Request | None = None
    last_request: Request | None = None  # the running request, else the one that ran last (for /slots)
    # Tokens whose KV this sequence holds, from position 0. Kept after the request ends: that is
    # the prefix cache.
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    # Lowest position still in the cache for this sequence (llama_memory_seq_pos_min), -1 empty.
    pos_min: int = -1
    # Which KV cells hold ``tokens``, as [origin, start, end) segments, and the origin of the
    # cells it writes next: copied prefixes share cells, counted once (see scheduler.cache.kv).
    segments: list[list[int]] = field(default_factory=list)
    origin: int = field(default_factory=new_origin)
    # n_keep of a context shift of this sequence: the tokens after it were computed beside tokens
    # since discarded, so only this many are a reusable prefix; -1: never shifted (see scheduler.cache.kv).
    shift_keep: int = -1
    cache_key: CacheKey = NO_KEY  # who may reuse ``tokens`` (the adapter set that computed them, the salt)
    # Writes that made its cells (one per step that appended to it, at most): beside other
    # sequences' writes each is a separate run of cells, and llama.cpp saves a sequence to host
    # memory one run at a time, so on a GPU a save's cost grows with this count, not the tokens.
    writes: int = 0

    @property
    def busy(self) -> bool:
        return self.request is not None
