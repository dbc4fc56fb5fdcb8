"""--models-memory's pieces without a server: the size flag, the GGUF header reader, the memory
estimate against llama.cpp's own figures, and the room policy (which idle models go)."""

from __future__ import annotations

import gguf
import pytest
from test_cli import parse

from executor.engine import ModelEngine
from ggserve.config import ServeConfig
from ggserve.models.gguf_meta import TYPE_SIZES, DamagedGGUF, GGUFError, read_metadata
from ggserve.models.resolve import resolve_model
from ggserve.models.memory import estimate_memory, model_files
from ggserve.models.room import Limits, Resident, victims

MODEL = resolve_model(None)


def test_models_memory_takes_binary_suffixes() -> None:
    for text, size in (("1073741824", 2**30), ("512M", 512 * 2**20), ("1.5G", 3 * 2**29), ("2GiB", 2 * 2**30),
                       ("64kb", 64 * 2**10), ("0", 0)):
        assert parse("--models-memory", text).models_memory == size, text
    assert parse().models_memory == 0  # no budget by default
    for bad in ("lots", "-1G", "nan", "1X"):
        with pytest.raises(SystemExit):
            parse("--models-memory", bad)


def test_the_header_reader_agrees_with_the_gguf_package() -> None:
    ours = read_metadata(MODEL)
    reference = gguf.GGUFReader(MODEL)
    assert ours.architecture == "gemma3"
    checked = 0
    for name, field in reference.fields.items():
        if name.startswith("GGUF.") or not name.startswith(("general.", "gemma3.")):
            continue
        value = field.contents()
        if isinstance(value, list):
            assert ours.array_lengths[name] == len(value), name
        else:
            assert ours.values[name] == pytest.approx(value), name
        checked += 1
    assert checked >= 10
    assert ours.array_lengths["tokenizer.ggml.tokens"] == len(reference.fields["tokenizer.ggml.tokens"].data)


def test_a_file_that_is_not_gguf_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00truncated")
    for path in (bad, tmp_path / "missing.gguf"):
        with pytest.raises(GGUFError):
            read_metadata(str(path))
    (tmp_path / "empty.gguf").touch()
    with pytest.raises(GGUFError):
        read_metadata(str(tmp_path / "empty.gguf"))


def test_the_tensors_data_end_is_where_the_file_ends_and_a_cut_file_is_damaged(tmp_path) -> None:
    model = resolve_model(None)
    with open(model, "rb") as f:
        data = f.read()
    assert read_metadata(model).data_end == len(data)
    cut = tmp_path / "cut.gguf"
    for size in (len(data) // 2, len(data) - 1000, 1 << 20, 20):  # in the data, the header, the fixed fields
        cut.write_bytes(data[:size])
        with pytest.raises(DamagedGGUF):
            read_metadata(str(cut))


def test_tensor_type_sizes_are_ggmls() -> None:
    known = {t.value: sizes for t, sizes in gguf.GGML_QUANT_SIZES.items()}
    assert all(known[kind] == sizes for kind, sizes in TYPE_SIZES.items())


def test_split_models_count_every_shard(tmp_path) -> None:
    first = tmp_path / "big-00001-of-00003.gguf"
    assert model_files(str(first)) == [str(tmp_path / f"big-0000{i}-of-00003.gguf") for i in (1, 2, 3)]
    assert model_files(MODEL) == [MODEL]


@pytest.mark.parametrize(("ctx", "slots", "exact"), [(512, 2, True), (2048, 1, False)])
def test_the_estimate_matches_llama_cpp_or_bounds_it(ctx: int, slots: int, exact: bool) -> None:
    """At -c 512 every layer of Gemma 3 holds -c cells and the estimate is llama.cpp's figure; at
    -c 2048 with one slot its sliding-window layers hold fewer, and the estimate is an upper bound."""
    cfg = ServeConfig(model=MODEL, ctx_size=ctx, n_parallel=slots, threads=1, repack=False)
    estimate = estimate_memory(cfg)
    engine = ModelEngine(cfg, 0)
    try:
        measured_kv, model_bytes, n_vocab = engine.info.kv_bytes, engine.info.model_size_bytes, engine.n_vocab
    finally:
        engine.close()
    assert measured_kv > 0
    assert estimate.kv_bytes == measured_kv if exact else measured_kv < estimate.kv_bytes <= 2 * measured_kv
    assert estimate.output_bytes == slots * n_vocab * 4  # one float32 row of logits per sequence
    assert model_bytes <= estimate.weights_bytes < 1.1 * model_bytes  # the file: tensors plus a header
    quantised = estimate_memory(ServeConfig(model=MODEL, ctx_size=ctx, n_parallel=slots, cache_type_k="q8_0",
                                            cache_type_v="q8_0"))
    assert quantised.kv_bytes == pytest.approx(estimate.kv_bytes * 34 / 64, rel=1e-6)
    two = estimate_memory(ServeConfig(model=MODEL, ctx_size=ctx, n_parallel=slots, executors=2))
    assert two.total_bytes == estimate.total_bytes + estimate.kv_bytes + estimate.output_bytes  # weights shared


def resident(name: str, gib: int, last_active: float, evictable: bool = True) -> Resident:
    return Resident(name, gib * 2**30, evictable, last_active)


def test_room_goes_to_the_least_recently_active_idle_models_only_as_needed() -> None:
    a, b, c = resident("a", 2, 1.0), resident("b", 2, 3.0), resident("c", 2, 2.0)
    memory = Limits(models_max=0, memory_bytes=8 * 2**30)
    assert victims(2 * 2**30, [a, b, c], memory) == []  # 6 + 2 fit in 8
    assert victims(4 * 2**30, [a, b, c], memory) == [a]  # oldest first, one is enough
    assert victims(6 * 2**30, [a, b, c], memory) == [a, c]
    busy_a = resident("a", 2, 1.0, evictable=False)
    assert victims(6 * 2**30, [busy_a, b, c], memory) == [c, b]
    assert victims(7 * 2**30, [busy_a, b, c], memory) is None  # not enough even unloading every idle one
    count = Limits(models_max=3, memory_bytes=0)
    assert victims(100 * 2**30, [a, b, c], count) == [a]  # no budget: only the count matters
    assert victims(1, [a, b], count) == []
    both = Limits(models_max=2, memory_bytes=5 * 2**30)
    assert victims(4 * 2**30, [a, b], both) == [a, b]  # the count wants one gone, the memory two
    assert both.never_fits(6 * 2**30) and not both.never_fits(5 * 2**30) and not count.never_fits(10**15)
