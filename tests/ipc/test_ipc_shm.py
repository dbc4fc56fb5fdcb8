"""The shared-memory arena: round trips, the allocator, other processes, and segment lifetime."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import msgspec
import numpy as np
import pytest

from ipc.protocol import ArrayRef
from ipc.shm import (
    ALIGNMENT,
    Arena,
    ArenaFull,
    ArenaReader,
    executor_owner,
    frontend_media_owner,
    run_id_of,
    unlink_orphans,
    unlink_segment,
)

REPO = Path(__file__).resolve().parents[2]


def _run_id() -> str:
    return f"test{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_arena() -> Iterator[Callable[..., Arena]]:
    arenas: list[Arena] = []

    def make(size: int = 1 << 16, run_id: str | None = None, owner: str = "writer") -> Arena:
        arenas.append(Arena(run_id or _run_id(), owner, size))
        return arenas[-1]

    yield make
    for arena in arenas:
        arena.close()
        with suppress(FileNotFoundError):  # the test unlinked it already
            arena.unlink()


@pytest.fixture
def reader() -> Iterator[ArenaReader]:
    reader = ArenaReader()
    yield reader
    reader.close()


def _exists(segment: str) -> bool:
    probe = ArenaReader()
    try:
        probe.get(ArrayRef(segment, 0, 0, "|u1", (0,)))
        return True
    except FileNotFoundError:
        return False
    finally:
        probe.close()


ARRAYS = {
    "f32-3d": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "f16": np.linspace(-1, 1, 7, dtype=np.float16),
    "i64-2d": np.arange(65, dtype=np.int64).reshape(5, 13) - 2**40,
    "u8": np.arange(100, dtype=np.uint8),
    "bool": np.eye(3, dtype=bool),
    "c64": np.array([1 + 2j, -3.5j, 0, 7], dtype=np.complex64),
    "i4-big-endian": np.arange(6, dtype=">i4"),
    "datetime": np.array(["2026-11-25T08:00", "1970-01-01T00:00"], dtype="datetime64[s]"),
    "0d-f64": np.array(3.5),
    "0d-i32": np.array(-7, dtype=np.int32),
    "empty-1d": np.zeros((0,), dtype=np.float32),
    "empty-3d": np.zeros((3, 0, 2), dtype=np.int16),
    "strided": np.arange(60, dtype=np.int32).reshape(6, 10)[::2, 1::3],
    "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
}


def test_round_trip_many_dtypes_and_shapes(make_arena, reader) -> None:
    arena = make_arena()
    refs = {name: arena.put(array) for name, array in ARRAYS.items()}  # all live at once
    offsets = sorted(ref.offset for ref in refs.values())
    assert len(set(offsets)) == len(offsets)
    for name, array in ARRAYS.items():
        ref = refs[name]
        assert ref.segment == arena.name
        assert ref.offset % ALIGNMENT == 0
        assert (ref.nbytes, ref.shape) == (array.nbytes, array.shape)
        assert np.dtype(ref.dtype) == array.dtype
        got = reader.get(ref)
        assert got.dtype == array.dtype and got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)


def test_ref_survives_the_wire(make_arena, reader) -> None:
    arena = make_arena()
    array = np.arange(10, dtype=np.float32)
    ref = msgspec.msgpack.decode(msgspec.msgpack.encode(arena.put(array)), type=ArrayRef)
    np.testing.assert_array_equal(reader.get(ref), array)


def test_get_copies_view_does_not(make_arena, reader) -> None:
    arena = make_arena()
    first = np.full(16, 1.0, dtype=np.float32)
    ref = arena.put(first)
    copy, view = reader.get(ref), reader.view(ref)
    assert copy.flags.writeable and not view.flags.writeable
    arena.release(ref)
    assert arena.put(np.full(16, 2.0, dtype=np.float32)).offset == ref.offset
    np.testing.assert_array_equal(copy, first)  # the copy is the reader's
    np.testing.assert_array_equal(view, 2.0)  # the view saw the region being reused
    del view  # before the reader fixture closes the mapping


def _checksum_in_child(ref_bytes: bytes, results: multiprocessing.Queue) -> None:
    ref = msgspec.msgpack.decode(ref_bytes, type=ArrayRef)
    reader = ArenaReader()
    array = reader.get(ref)
    reader.close()
    results.put((hashlib.sha256(array.tobytes()).hexdigest(), str(array.dtype), array.shape))


def test_reader_in_spawned_process(make_arena) -> None:
    arena = make_arena(1 << 20)
    array = np.random.default_rng(0).standard_normal((64, 384)).astype(np.float32)
    ref = arena.put(array)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_checksum_in_child, args=(msgspec.msgpack.encode(ref), results))
    child.start()
    try:
        got = results.get(timeout=60)
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0
    assert got == (hashlib.sha256(array.tobytes()).hexdigest(), "float32", (64, 384))


def test_release_then_put_reuses_offset(make_arena) -> None:
    arena = make_arena()
    keep = arena.put(np.zeros(100, dtype=np.uint8))
    ref = arena.put(np.zeros(1000, dtype=np.uint8))
    arena.release(ref)
    again = arena.put(np.ones(1000, dtype=np.uint8))
    assert again.offset == ref.offset and keep.offset == 0
    assert arena.put(np.zeros(10, dtype=np.uint8)).offset == ref.offset + 1024  # 1000 -> 16 lines


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_neighbouring_holes_coalesce(make_arena, order: tuple[int, ...]) -> None:
    arena = make_arena(3 * 1024)
    refs = [arena.put(np.zeros(1024, dtype=np.uint8)) for _ in range(3)]
    assert [ref.offset for ref in refs] == [0, 1024, 2048]
    for i in order:
        arena.release(refs[i])
    assert arena.put(np.zeros(3 * 1024, dtype=np.uint8)).offset == 0


def test_holes_that_are_not_neighbours_stay_apart(make_arena) -> None:
    arena = make_arena(3 * 1024)
    first, middle, last = (arena.put(np.zeros(1024, dtype=np.uint8)) for _ in range(3))
    arena.release(first)
    arena.release(last)
    with pytest.raises(ArenaFull):
        arena.put(np.zeros(2048, dtype=np.uint8))
    arena.release(middle)
    assert arena.put(np.zeros(2048, dtype=np.uint8)).offset == 0


def test_full_arena_raises(make_arena) -> None:
    arena = make_arena(1000)  # usable: 960 bytes, 15 cache lines
    with pytest.raises(ArenaFull, match=r"no room for 961 bytes \(960 of 960 free"):
        arena.put(np.zeros(961, dtype=np.uint8))
    refs = [arena.put(np.zeros(64, dtype=np.uint8)) for _ in range(15)]
    with pytest.raises(ArenaFull, match="largest hole 0"):
        arena.put(np.zeros((), dtype=np.uint8))  # even a 0-d or empty array takes a line
    arena.release(refs[7])
    assert arena.put(np.zeros(0, dtype=np.uint8)).offset == refs[7].offset


def test_bad_releases_and_arrays_are_refused(make_arena) -> None:
    arena, other = make_arena(), make_arena()
    ref = arena.put(np.zeros(8))
    with pytest.raises(ValueError, match="does not belong"):
        other.release(ref)
    arena.release(ref)
    with pytest.raises(ValueError, match="released twice"):
        arena.release(ref)
    with pytest.raises(ValueError, match="dtype"):
        arena.put(np.array([object()]))
    with pytest.raises(ValueError, match="dtype"):
        arena.put(np.zeros(2, dtype=[("x", "<i4"), ("y", "<f4")]))
    with pytest.raises(ValueError, match="at least"):
        Arena(_run_id(), "tiny", 63)


def test_put_after_close_fails(make_arena) -> None:
    arena = make_arena()
    arena.close()
    with pytest.raises(ValueError):
        arena.put(np.zeros(4))


def test_segment_name_and_unlink(make_arena, reader) -> None:
    run_id = _run_id()
    arena = make_arena(run_id=run_id, owner="executor-0")
    assert arena.name == f"ggserve-{run_id}-executor-0"
    ref = arena.put(np.arange(5))
    np.testing.assert_array_equal(reader.get(ref), np.arange(5))  # reader attached
    arena.unlink()
    assert not _exists(arena.name)
    with pytest.raises(FileNotFoundError):
        ArenaReader().get(ref)
    # A mapping made before unlink stays valid until it is closed.
    np.testing.assert_array_equal(reader.get(ref), np.arange(5))


def test_detach_drops_a_stale_mapping(make_arena, reader) -> None:
    run_id = _run_id()
    old = make_arena(run_id=run_id)
    ref = old.put(np.full(4, 1))
    assert reader.get(ref)[0] == 1
    old.close()
    old.unlink()
    new = make_arena(run_id=run_id)  # a restarted writer, same segment name
    assert new.put(np.full(4, 2)) == ref
    assert reader.get(ref)[0] == 1  # still the dead writer's memory
    reader.detach(ref.segment)
    assert reader.get(ref)[0] == 2


# Run in a fresh interpreter so that its stderr holds everything the resource tracker says.
SCENARIO = """
import hashlib, multiprocessing, subprocess, sys

import msgspec
import numpy as np

from ipc.protocol import ArrayRef
from ipc.shm import Arena, ArenaReader


def checksum(ref_bytes):
    reader = ArenaReader()
    array = reader.get(msgspec.msgpack.decode(ref_bytes, type=ArrayRef))
    reader.close()
    return hashlib.sha256(array.tobytes()).hexdigest()


def spawned(ref_bytes, results):
    results.put(checksum(ref_bytes))


if __name__ == "__main__":
    if sys.argv[1] == "read":  # a reader with a resource tracker of its own
        print(checksum(bytes.fromhex(sys.argv[2])))
        sys.exit()
    arena = Arena(sys.argv[1], "writer", 1 << 16)
    array = np.arange(1000, dtype=np.float32)
    ref = arena.put(array)
    ref_bytes = msgspec.msgpack.encode(ref)
    want = hashlib.sha256(array.tobytes()).hexdigest()

    # A multiprocessing child shares this process's resource tracker.
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=spawned, args=(ref_bytes, results))
    child.start()
    assert results.get(timeout=60) == want
    child.join(timeout=60)
    assert child.exitcode == 0

    read = subprocess.run(
        [sys.executable, __file__, "read", ref_bytes.hex()], stdout=subprocess.PIPE, text=True
    )
    assert read.returncode == 0 and read.stdout.strip() == want

    # Neither reader took the segment with it.
    reader = ArenaReader()
    assert hashlib.sha256(reader.get(ref).tobytes()).hexdigest() == want
    reader.close()
    arena.release(ref)
    arena.close()
    arena.unlink()
    print("ok")
"""


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_readers_leave_no_resource_tracker_noise(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    run_id = _run_id()
    done = _python(str(script), run_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
    assert done.stderr == ""  # no "leaked shared_memory", no tracker KeyError traceback
    assert not _exists(f"ggserve-{run_id}-writer")


def test_owner_that_dies_without_unlink_is_cleaned_up(tmp_path: Path) -> None:
    run_id = _run_id()
    code = f"from ipc.shm import Arena; Arena({run_id!r}, 'writer', 4096); print('created')"
    done = _python("-c", code, cwd=tmp_path)
    assert done.stdout == "created\n"
    assert "leaked shared_memory" in done.stderr  # the owner's tracker unlinked it
    assert not _exists(f"ggserve-{run_id}-writer")


def test_a_reader_forgets_unlinked_segments_when_it_attaches_another(make_arena, reader) -> None:
    run_id = _run_id()
    dead = make_arena(run_id=run_id, owner=executor_owner(0, 100))
    assert dead.name == f"ggserve-{run_id}-executor0-100" and run_id_of(f"/tmp/{run_id}/") == run_id
    reader.get(dead.put(np.arange(3)))
    view = reader.view(dead.put(np.arange(3)))
    dead.close()
    unlink_segment(dead.name)  # what the launcher does for a killed executor
    unlink_segment(dead.name)  # and again: already gone is fine
    assert not _exists(dead.name)
    live = make_arena(run_id=run_id, owner=executor_owner(0, 101))
    reader.get(live.put(np.arange(3)))  # attaching the new segment drops the old mapping
    assert list(reader._maps) == [live.name]
    np.testing.assert_array_equal(view, np.arange(3))  # a live view keeps its memory until it goes
    assert live.free_bytes == live.capacity - ALIGNMENT


def test_segments_of_owners_that_are_gone_are_unlinked_and_live_ones_kept(make_arena) -> None:
    """What a process killed with its resource tracker (its process group SIGKILLed) leaves is
    freed; a segment whose owner lives, or whose name holds no owner's pid, is not touched."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # that process has exited (and been reaped)
    run_id = _run_id()
    orphans = [make_arena(4096, run_id, frontend_media_owner(dead_pid)),
               make_arena(4096, run_id, executor_owner(1, dead_pid))]
    kept = [make_arena(4096, run_id, frontend_media_owner(os.getpid())), make_arena(4096, run_id, "writer")]
    for arena in orphans + kept:
        arena.close()
    assert unlink_orphans() >= 2 * 4096
    assert [_exists(a.name) for a in orphans + kept] == [False, False, True, True]


def test_another_users_orphans_are_left_alone(make_arena, monkeypatch) -> None:
    """Only a segment's owner may unlink it in the sticky /dev/shm: another user's leftovers are
    skipped, never an error at a server's start."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = make_arena(4096, _run_id(), frontend_media_owner(int(gone.stdout)))

    def refused(name: str) -> None:
        raise PermissionError(1, "Operation not permitted", name)

    monkeypatch.setattr("ipc.shm._posixshmem.shm_unlink", refused)
    assert unlink_orphans() == 0
    monkeypatch.undo()
    assert _exists(orphan.name)
