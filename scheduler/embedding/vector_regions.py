"""Who still reads each arena region of the executors' embedding vectors, and when it goes back.

An embedding step whose vectors went through shared memory leaves one region in its executor's
arena (ipc.shm) with rows of one or more requests. The region is held once by every unfinished
request with rows in it; a request that ends with its vectors lends its hold to the frontend
worker it answers, until that worker says VectorsRead or is forgotten (it died or went silent).
A request that ends otherwise (aborted, failed) lets go at once. A region nobody holds is queued
for its executor, which frees it before its next EmbedPlan writes (``take_releases``): a region
is only needed when a step writes. An executor that dies takes its regions with it (a restarted
one has a new arena); the holds on them are then ignored.

Explicit release instead of a ring that readers race against: a reader never finds its rows
overwritten, whatever the load, and the cost is one small message per request (VectorsRead)
plus refs riding on plans that are sent anyway.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from ipc.protocol import ArrayRef

RegionKey = tuple[str, int]  # (segment, offset): unique while the region is allocated


def key_of(ref: ArrayRef) -> RegionKey:
    return ref.segment, ref.offset


class VectorRegions:
    def __init__(self) -> None:
        self._regions: dict[RegionKey, tuple[int, ArrayRef]] = {}  # -> (executor id, ref)
        self._holds: collections.Counter[RegionKey] = collections.Counter()
        self._lent: dict[bytes, dict[str, list[RegionKey]]] = collections.defaultdict(dict)  # peer -> request ->
        self._releases: dict[int, list[ArrayRef]] = collections.defaultdict(list)  # executor -> to free

    def __len__(self) -> int:
        """Regions allocated in live executors' arenas and not yet queued for release."""
        return len(self._regions)

    def add(self, executor_id: int, ref: ArrayRef) -> RegionKey:
        """A new region, held by nobody yet: ``hold`` it, then ``settle`` it."""
        key = key_of(ref)
        self._regions[key] = (executor_id, ref)
        return key

    def hold(self, key: RegionKey) -> None:
        self._holds[key] += 1

    def settle(self, key: RegionKey) -> None:
        """Release the region if nobody took a hold on it (every request of its step had ended)."""
        if key in self._regions and not self._holds[key]:
            self._release(key)

    def drop(self, keys: Iterable[RegionKey]) -> None:
        """Let go of one hold on each region; one nobody holds any more is released."""
        for key in keys:
            if key not in self._regions:
                continue  # its executor died
            self._holds[key] -= 1
            if self._holds[key] <= 0:
                self._release(key)

    def lend(self, peer: bytes, request_id: str, keys: list[RegionKey]) -> None:
        """The request's output, with refs to these regions, went to ``peer``: its holds are now the peer's."""
        self._lent[peer][request_id] = keys

    def returned(self, peer: bytes, request_ids: list[str]) -> None:
        """The peer copied these requests' rows (VectorsRead); unknown ids are ignored."""
        lent = self._lent.get(peer, {})
        for request_id in request_ids:
            self.drop(lent.pop(request_id, []))

    def forget_peer(self, peer: bytes) -> None:
        """The peer is gone: it reads nothing more."""
        for keys in self._lent.pop(peer, {}).values():
            self.drop(keys)

    def forget_executor(self, executor_id: int) -> list[RegionKey]:
        """The executor died with its arena: forget its regions (the keys, for failing their holders)."""
        gone = [key for key, (owner, _) in self._regions.items() if owner == executor_id]
        for key in gone:
            del self._regions[key]
            del self._holds[key]
        self._releases.pop(executor_id, None)
        return gone

    def take_releases(self, executor_id: int) -> list[ArrayRef]:
        """The regions the executor may free, for its next EmbedPlan."""
        return self._releases.pop(executor_id, [])

    def _release(self, key: RegionKey) -> None:
        executor_id, ref = self._regions.pop(key)
        del self._holds[key]
        self._releases[executor_id].append(ref)
