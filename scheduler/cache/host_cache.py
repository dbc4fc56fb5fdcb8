"""The scheduler's index of the prefixes an executor keeps in host memory (--cache-ram).

An idle cached prefix evicted from the KV cache for room is saved to the executor's host memory
first (a SAVE op) when it is long enough to be worth it; a later request that shares more of
it than any slot offers has it restored (RESTORE) into a free slot instead of recomputing it.
Entries are dropped least recently used first past the budget (a DROP op). Sizes are estimated
from the bytes per token of the executor's start-up save (else its KV bytes per cell, which on a
sliding-window model undercount a prefix); on sliding-window models an entry is reusable up to
where its window cells reach, as a slot's prefix is (scheduler.policy.reusable_prefix).

A save must cost less than recomputing the prefix would. llama.cpp copies a sequence out run of
cells by run of cells, one synchronous device copy per run and layer; a sequence decoded beside
others has a run per step (its cells interleave with theirs). On a CPU that is a memcpy each,
nothing beside a prefill; on a GPU a 160-token prefix decoded among 16 sequences measured 48 ms
to save against ~3 ms to recompute. So the executor times one save at start-up
(``ExecutorInfo.save_run_seconds``) and then every save, the index keeps the time per run
(``Slot.writes`` counts a slot's runs), and a prefix whose save would take more than SAVE_SHARE
of its recompute time is evicted without one.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from ggserve.tokens import common_prefix_len
from scheduler.media import snap_reuse
from scheduler.request import CacheKey

MIN_TOKENS = 32  # cutting fewer tokens than this from a prefix does not save it (cheap to recompute)
SAVE_SHARE = 0.5  # a save may cost this much of a recompute: it pays only if the prefix comes back
RUN_SECONDS_DECAY = 0.8  # per measured step: the time per run follows the recent saves


@dataclass(eq=False)
class HostEntry:
    entry_id: int
    tokens: list[int]
    pos_min: int  # the saved sequence's lowest position (sliding window)
    nbytes: int
    last_used: float
    key: CacheKey  # who may reuse the prefix (the adapter set that computed it, the salt)


class HostCacheIndex:
    def __init__(self, budget_bytes: int, bytes_per_token: float, run_seconds: float = 0.0) -> None:
        self.budget_bytes = budget_bytes  # < 0: no limit; 0: off
        self.bytes_per_token = bytes_per_token
        self.entries: list[HostEntry] = []
        self._ids = itertools.count(1)
        # A save's time per run of cells: the executor's start-up measure, then the saves' (0: not
        # known yet: saves pay).
        self.run_seconds = run_seconds
        self._queued_runs = 0  # runs of the SAVE ops for the next step
        self._in_flight_runs = 0  # ... and of the step running
        self._kept: HostEntry | None = None  # an entry a restore being planned needs (``keeping``)

    @property
    def enabled(self) -> bool:
        return self.budget_bytes != 0

    def worth_saving(self, tokens: list[int], key: CacheKey) -> bool:
        """Within the budget, and not already held whole by an entry."""
        fits = self.budget_bytes < 0 or len(tokens) * self.bytes_per_token <= self.budget_bytes
        return (self.enabled and fits and not any(
            e.key == key and common_prefix_len(e.tokens, tokens) == len(tokens) for e in self.entries))

    def save_pays(self, runs: int, recompute_seconds: float) -> bool:
        """Whether saving a prefix of ``runs`` runs of cells costs less than recomputing it would
        (``recompute_seconds``), by SAVE_SHARE."""
        return runs * self.run_seconds <= SAVE_SHARE * recompute_seconds

    def queued(self, runs: int) -> None:
        """A SAVE op of ``runs`` runs of cells goes out with the next step."""
        self._queued_runs += runs

    def sent(self) -> None:
        """The next step went out with the queued SAVE ops."""
        self._in_flight_runs, self._queued_runs = self._queued_runs, 0

    def measured(self, save_seconds: float) -> None:
        """The step's SAVE ops took ``save_seconds`` in all."""
        runs, self._in_flight_runs = self._in_flight_runs, 0
        if runs:
            per_run = save_seconds / runs
            self.run_seconds = per_run if self.run_seconds == 0 else (
                RUN_SECONDS_DECAY * self.run_seconds + (1 - RUN_SECONDS_DECAY) * per_run)

    @contextlib.contextmanager
    def keeping(self, entry: HostEntry | None) -> Iterator[None]:
        """While a restore of ``entry`` is planned: the prefixes evicted to make room for it are
        saved without dropping it (the RESTORE op follows their SAVE and DROP ops)."""
        self._kept = entry
        try:
            yield
        finally:
            self._kept = None

    def add(self, tokens: list[int], pos_min: int, now: float, key: CacheKey) -> tuple[int, list[int]] | None:
        """Index a saved prefix: (its entry id, ids of the entries dropped for it); None when it
        does not fit the budget beside the entry kept for a restore."""
        entry = HostEntry(next(self._ids), list(tokens), pos_min, int(len(tokens) * self.bytes_per_token), now, key)
        kept = self._kept.nbytes if self._kept is not None else 0
        if self.budget_bytes > 0 and kept + entry.nbytes > self.budget_bytes:
            return None
        # Entries the new one extends are redundant; then the least recently used go past the budget.
        dropped = [e for e in self.entries if e is not self._kept and e.key == key
                   and common_prefix_len(e.tokens, tokens) == len(e.tokens)]
        self.entries = [e for e in self.entries if e not in dropped]
        while self.budget_bytes > 0 and sum(e.nbytes for e in self.entries) + entry.nbytes > self.budget_bytes:
            oldest = min((e for e in self.entries if e is not self._kept), key=lambda e: e.last_used)
            self.entries.remove(oldest)
            dropped.append(oldest)
        self.entries.append(entry)
        return entry.entry_id, [e.entry_id for e in dropped]

    def best(self, tokens: list[int], n_swa: int, key: CacheKey) -> tuple[HostEntry | None, int]:
        """The entry of cache key ``key`` sharing the longest reusable prefix with ``tokens``,
        and that length."""
        best, best_len = None, 0
        for entry in self.entries:
            if entry.key != key:
                continue
            m = snap_reuse(tokens, min(common_prefix_len(entry.tokens, tokens), len(tokens) - 1))
            if n_swa > 0 and entry.pos_min > max(0, m - n_swa):
                continue
            if m > best_len:
                best, best_len = entry, m
        return best, best_len
