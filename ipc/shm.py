"""Shared-memory arena: numpy arrays cross processes as an ``ArrayRef`` handle, not as bytes.

Protocol (the arena never sends messages itself; the caller's protocol messages carry it):
  1. The writer (the process that owns an ``Arena``) calls ``put(array)``: the array is copied into
     a free region of its segment and an ``ArrayRef(segment, offset, nbytes, dtype, shape)`` comes
     back.
  2. The writer sends that ``ArrayRef`` inside an ordinary protocol message.
  3. The reader calls ``ArenaReader.get(ref)``, which attaches the segment by name on first use and
     returns a private copy (``view(ref)`` skips the copy, see below).
  4. The reader tells the writer, by whatever message the caller uses, that it is done; the writer
     calls ``release(ref)`` and the region can be reused. Until then the region is the reader's.
A full arena raises ``ArenaFull``: the writer should wait for releases, or send the bytes another
way, never overwrite. The segment's memory is reserved when it is created (which raises OSError
when ``/dev/shm`` has no room), so no later write can meet a full ``/dev/shm`` (a SIGBUS).

Segments are named ``ggserve-<run id>-<owner>`` so leftovers of a crashed run are recognisable in
``/dev/shm``; an owner name holds the owner's pid (``executor_owner``, ``frontend_media_owner``),
so a restarted process gets a new segment and handles of its predecessor can never read the new
one's data. A reader drops its mappings of unlinked segments when it attaches a new one. Only the
owner registers its segment with Python's resource tracker (which unlinks it if the owner dies
without ``unlink()``); a SIGKILL of its process group takes the tracker too, so the launcher
unlinks what dead owners left (``unlink_segment``, ``unlink_orphans``). Readers attach without
registering, so a reader exiting never destroys a segment it did not create. POSIX only.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import re
import threading
from multiprocessing.shared_memory import SharedMemory

import _posixshmem  # what SharedMemory itself uses; see ArenaReader._attach
import numpy as np

from ipc.protocol import ArrayRef

ALIGNMENT = 64  # bytes; every region starts on a cache line
SHM_DIR = "/dev/shm"  # where POSIX shared memory names live (Linux)


class ArenaFull(Exception):
    """No free region is large enough for the array; release some refs first."""


def segment_name(run_id: str, owner: str) -> str:
    return f"ggserve-{run_id}-{owner}"


def run_id_of(run_dir: str) -> str:
    """A run's id in segment names: its run directory's name (unique per run: mkdtemp's)."""
    return os.path.basename(os.path.normpath(run_dir))


def executor_owner(executor_id: int, pid: int) -> str:
    """The owner name of one executor process's arena: one segment per incarnation."""
    return f"executor{executor_id}-{pid}"


def frontend_media_owner(pid: int) -> str:
    """The owner name of one HTTP worker's arena for media files."""
    return f"frontend-media-{pid}"


# ggserve-<run id>-<owner>, the owner's pid ending the name (executor_owner, frontend_media_owner)
_OWNED = re.compile(r"ggserve-.+-(?:executor\d+|frontend-media)-(\d+)")


def unlink_segment(name: str) -> None:
    """Remove a segment's name if it is still there (its owner died without ``unlink()``)."""
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name)


def unlink_orphans() -> int:
    """Unlink every ggserve segment whose owner process is gone, of any run, and return the
    bytes freed. A process killed with its process group (the launcher stops the frontend so,
    and a SIGKILL stops a whole server so) takes Python's resource tracker along, and its
    segment would hold its memory in ``/dev/shm`` until the machine restarts. A live owner's
    segment is never touched; a reader that has it mapped keeps its mapping."""
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return 0
    freed = 0
    for name in names:
        owned = _OWNED.fullmatch(name)
        if owned is None or pid_alive(int(owned.group(1))):
            continue
        # gone meanwhile, or another user's (only its owner may unlink it in the sticky /dev/shm)
        with contextlib.suppress(FileNotFoundError, PermissionError):
            size = os.stat(os.path.join(SHM_DIR, name)).st_size
            unlink_segment(name)
            freed += size
    return freed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust kill()


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


class _FreeList:
    """First-fit allocator over [0, capacity): holes sorted by offset, neighbours coalesced."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._holes: list[tuple[int, int]] = [(0, capacity)]  # (offset, size), sorted by offset
        self._used: dict[int, int] = {}  # offset -> size of allocated regions

    def alloc(self, size: int) -> int | None:
        for i, (offset, hole) in enumerate(self._holes):
            if hole >= size:
                if hole == size:
                    del self._holes[i]
                else:
                    self._holes[i] = (offset + size, hole - size)
                self._used[offset] = size
                return offset
        return None

    def free(self, offset: int) -> None:
        size = self._used.pop(offset)
        i = bisect.bisect(self._holes, (offset, size))
        if i < len(self._holes) and self._holes[i][0] == offset + size:  # merge the next hole
            size += self._holes.pop(i)[1]
        if i > 0 and sum(self._holes[i - 1]) == offset:  # and the previous one
            prev_offset, prev_size = self._holes[i - 1]
            self._holes[i - 1] = (prev_offset, prev_size + size)
        else:
            self._holes.insert(i, (offset, size))

    def is_used(self, offset: int) -> bool:
        return offset in self._used

    @property
    def free_bytes(self) -> int:
        return sum(size for _, size in self._holes)

    @property
    def largest_hole(self) -> int:
        return max((size for _, size in self._holes), default=0)


class Arena:
    """The writer's side: one segment it creates, owns and finally unlinks. Thread-safe."""

    def __init__(self, run_id: str, owner: str, size: int) -> None:
        if size < ALIGNMENT:
            raise ValueError(f"arena size must be at least {ALIGNMENT} bytes, got {size}")
        self.name = segment_name(run_id, owner)
        self._shm = SharedMemory(self.name, create=True, size=size)
        try:
            os.posix_fallocate(self._shm._fd, 0, size)  # reserve the memory now (see the docstring)
        except OSError:
            self._shm.close()
            self._shm.unlink()
            raise
        # Released by SharedMemory.close(), so a put after close() fails instead of writing into
        # a fresh private array (which np.ndarray(buffer=None) would silently do).
        self._buf = self._shm.buf
        self._free = _FreeList(size // ALIGNMENT * ALIGNMENT)
        # put() may run on the compute thread while release() runs on a socket thread.
        self._lock = threading.Lock()

    def put(self, array: np.ndarray) -> ArrayRef:
        """Copy ``array`` into the arena; the region stays allocated until ``release(ref)``."""
        dtype = array.dtype
        if dtype.hasobject or np.dtype(dtype.str) != dtype:
            raise ValueError(f"dtype {dtype!r} cannot be described by ArrayRef.dtype")
        size = _aligned(max(array.nbytes, 1))  # empty arrays get a region too: one ref, one offset
        with self._lock:
            offset = self._free.alloc(size)
            if offset is None:
                raise ArenaFull(
                    f"arena {self.name}: no room for {array.nbytes} bytes "
                    f"({self._free.free_bytes} of {self._free.capacity} free, "
                    f"largest hole {self._free.largest_hole})"
                )
        np.ndarray(array.shape, dtype, buffer=self._buf, offset=offset)[...] = array
        return ArrayRef(self.name, offset, array.nbytes, dtype.str, array.shape)

    def release(self, ref: ArrayRef) -> None:
        """Free the region of ``ref`` for reuse; readers must be done with it."""
        if ref.segment != self.name:
            raise ValueError(f"{ref} does not belong to arena {self.name}")
        with self._lock:
            if not self._free.is_used(ref.offset):
                raise ValueError(f"{ref} is not allocated (released twice?)")
            self._free.free(ref.offset)

    @property
    def capacity(self) -> int:
        return self._free.capacity

    @property
    def free_bytes(self) -> int:
        with self._lock:
            return self._free.free_bytes

    def close(self) -> None:
        """Unmap the segment in this process (other processes keep their mappings)."""
        self._shm.close()

    def unlink(self) -> None:
        """Remove the segment's name; its memory goes when the last mapping closes."""
        self._shm.unlink()


class ArenaReader:
    """The reader's side: attaches writers' segments by name on first use and keeps them mapped."""

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}

    def get(self, ref: ArrayRef) -> np.ndarray:
        """A private copy of the array; valid after the writer releases ``ref``."""
        return self.view(ref).copy()

    def view(self, ref: ArrayRef) -> np.ndarray:
        """The array in place, read-only, without a copy. Valid only until the writer releases
        ``ref``: after that the region may hold another array. Drop views before ``detach`` or
        ``close`` (an unmapped segment with live views raises BufferError)."""
        mapping = self._maps.get(ref.segment)
        if mapping is None:
            mapping = self._attach(ref.segment)
            self._drop_unlinked()
            self._maps[ref.segment] = mapping
        return np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=mapping, offset=ref.offset)

    def detach(self, segment: str) -> None:
        """Unmap one segment, e.g. of a writer that died and will come back under the same name."""
        mapping = self._maps.pop(segment, None)
        if mapping is not None:
            mapping.close()

    def close(self) -> None:
        for segment in list(self._maps):
            self.detach(segment)

    def _drop_unlinked(self) -> None:
        """Forget segments whose name is gone (a dead writer's): the mapping goes with its last
        view (at once when there is none), and the memory once no process maps it."""
        for segment in list(self._maps):
            try:
                os.close(_posixshmem.shm_open("/" + segment, os.O_RDONLY, mode=0o600))
            except FileNotFoundError:
                del self._maps[segment]

    @staticmethod
    def _attach(segment: str) -> mmap.mmap:
        # Not SharedMemory(segment): on Python < 3.13 it registers the segment with this process's
        # resource tracker, which unlinks it when the reader exits. Unregistering afterwards is
        # wrong too when the tracker is shared with the writer (a multiprocessing child inherits
        # its parent's): it drops the writer's registration and the writer's unlink() then makes
        # the tracker print a KeyError traceback. Mapping the segment directly never registers.
        fd = _posixshmem.shm_open("/" + segment, os.O_RDONLY, mode=0o600)
        try:
            return mmap.mmap(fd, os.fstat(fd).st_size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
