"""Assemble what a lent GPU machine receives for a benchmark: ``python -m bench.gpu.kit``.

The device machine (docs/benchmarks.md, "One GPU") has CUDA's runtime libraries and Python 3.12
but none of ggserve's packages, cannot download anything, and receives at most 64 MiB per call,
while its minutes are few. So everything is built here, once, into a cache outside the
repository, staged there and packed into ``.gpu/kit.tar.xz`` (ignored by git; name ``.gpu`` in
the call's ``carry``):

- ``lib/``: llama.cpp's shared libraries from the vendored tree of the pinned llama-cpp-python,
  built for CUDA (sm_90, the H100 and H200), with llama-server and llama-batched-bench. The
  libraries replace ``llama_cpp/lib`` there and the programs link the same files: identical
  kernels.
- ``site/``: the pure-Python ``llama_cpp`` package (its ctypes bindings work on any Python).
- ``wheels/``: the packages ggserve needs that the machine's Python lacks, for CPython 3.12.
- ``model.xz``: the embedded model's stand-in (``bench.micro.gguf_standin``).

``bench/gpu/run.sh`` (run there) unpacks it and runs the benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from bench.baselines.llama_cpp_build import cache_dir, cmake_build, pinned_version, source_tree
from bench.micro import gguf_standin
from ggserve.models.resolve import default_model_path

TARGETS = ("llama", "mtmd", "llama-server", "llama-batched-bench")
# GGML_CUDA_NO_VMM: this machine has no driver (libcuda.so) to link the virtual memory API with;
# GGML_NATIVE=OFF with AVX2: the device machine's CPU is not this one.
CMAKE_OPTIONS = ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DBUILD_SHARED_LIBS=ON",
                 "-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_CUDA_NO_VMM=ON", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_USE_PREBUILT_UI=OFF")
# what ggserve and llama_cpp import that the device image lacks (numpy, jinja2, prometheus-client are there)
WHEELS = ("pyzmq", "msgspec", "granian", "diskcache")  # diskcache: llama_cpp imports it
DEVICE_PYTHON = "3.12"
CARRY_LIMIT = 64 << 20  # bytes a call may carry


def _log(message: str) -> None:
    print(f"[bench.gpu] {message}", file=sys.stderr, flush=True)


def _pip_download(spec: str, dest: Path, python: str | None = None) -> Path:
    """One binary wheel of ``spec`` (for CPython ``python`` on x86-64 Linux when given), into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    target = []
    if python:
        target = ["--python-version", python, "--implementation", "cp"]
        for tag in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014", "manylinux1"):
            target += ["--platform", f"{tag}_x86_64"]
    before = set(dest.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *target,
                    spec, "-d", str(dest)], check=True, stdout=sys.stderr)
    new = set(dest.glob("*.whl")) - before
    name = spec.split("<")[0].split(">")[0].split("=")[0].replace("-", "_").lower()
    return (new or {w for w in dest.glob("*.whl") if w.name.lower().startswith(name)}).pop()


def cublas(version: str) -> Path:
    """cuBLAS's headers and libraries (``include/``, ``lib/``), which the CUDA compiler here lacks.

    They come from NVIDIA's wheel for the compiler's major version, as the device's PyTorch has
    them; the build links the soname (libcublas.so.13) and finds the library there at run time.
    """
    root = cache_dir(version) / "cublas"
    if (root / "include" / "cublas_v2.h").is_file():
        return root
    major = _nvcc_major()
    _log(f"downloading cuBLAS for CUDA {major} (a wheel of ~450 MB; once)")
    wheel = _pip_download(f"nvidia-cublas>={major},<{major + 1}", cache_dir(version) / "wheels-cuda")
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            parts = Path(member).parts
            if len(parts) >= 4 and parts[0] == "nvidia" and parts[2] in ("include", "lib"):
                out = root.joinpath(*parts[2:])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(member))
    wheel.unlink()
    return root


def _nvcc_major() -> int:
    text = subprocess.run(["nvcc", "--version"], check=True, capture_output=True, text=True).stdout
    return int(text.split("release ")[1].split(".")[0])


def build(version: str, jobs: int | None) -> Path:
    """The CUDA build's bin/ folder (shared libraries and programs), building it if needed."""
    out = cache_dir(version) / "build-cuda"
    bin_dir = out / "bin"
    if not all((bin_dir / name).is_file() for name in ("llama-server", "llama-batched-bench")):
        blas = cublas(version)
        include = f"-I{blas / 'include'}"
        options = (*CMAKE_OPTIONS, f"-DCUDA_cublas_LIBRARY={blas / 'lib' / 'libcublas.so.13'}",
                   f"-DCUDA_cublasLt_LIBRARY={blas / 'lib' / 'libcublasLt.so.13'}",
                   f"-DCMAKE_CUDA_FLAGS={include}", f"-DCMAKE_CXX_FLAGS={include}")
        cmake_build(source_tree(version), out, options, TARGETS, jobs)
    return bin_dir


PROGRAMS = ("llama-server", "llama-batched-bench")


def _copy_libraries(bin_dir: Path, dest: Path) -> None:
    """Every shared library of the build (the links between their names kept) and the two
    programs, stripped."""
    dest.mkdir(parents=True)
    for path in sorted(bin_dir.glob("lib*.so*")):
        if path.is_symlink():
            os.symlink(os.readlink(path), dest / path.name)
        else:
            shutil.copyfile(path, dest / path.name)
    for name in PROGRAMS:
        shutil.copy2(bin_dir / name, dest / name)
    subprocess.run(["strip", "--strip-unneeded", *(str(p) for p in dest.iterdir() if not p.is_symlink())],
                   check=True)


def _copy_llama_cpp(dest: Path) -> None:
    """The installed llama_cpp package without its libraries, and its metadata (the benchmark
    reads the pinned version from it)."""
    dist = importlib.metadata.distribution("llama-cpp-python")
    package = Path(dist.locate_file("llama_cpp"))
    shutil.copytree(package, dest / "llama_cpp", ignore=shutil.ignore_patterns("lib", "__pycache__", "server"))
    info = Path(dist._path)  # type: ignore[attr-defined]
    shutil.copytree(info, dest / info.name)


def assemble(dest: Path, jobs: int | None) -> Path:
    """Build what is missing, stage the kit in the cache and pack it into ``dest``/kit.tar.xz
    (the CUDA library alone is ~65 MB; compressed, the whole kit carries)."""
    version = pinned_version()
    bin_dir = build(version, jobs)
    stage = cache_dir(version) / "gpu-kit"
    if stage.exists():
        shutil.rmtree(stage)
    _log(f"staging the kit in {stage}")
    _copy_libraries(bin_dir, stage / "lib")
    _copy_llama_cpp(stage / "site")
    for name in WHEELS:
        _pip_download(f"{name}=={importlib.metadata.version(name)}", stage / "wheels", DEVICE_PYTHON)
    gguf_standin.pack(str(default_model_path()), str(stage / "model.xz"))
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "kit.tar.xz"
    _log(f"packing {archive} (a minute or two)")
    subprocess.run(["tar", "-cf", str(archive), "-I", "xz -T0 -6", "-C", str(stage), "."], check=True)
    size = archive.stat().st_size
    _log(f"{archive}: {size / 2**20:.1f} MiB (a call carries {CARRY_LIMIT >> 20} MiB with the working tree)")
    if size > CARRY_LIMIT - (8 << 20):
        raise SystemExit(f"{archive} is too large to carry")
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.kit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=Path(".gpu"), help="the folder to fill (default .gpu)")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="build jobs (default: every core)")
    args = parser.parse_args(argv)
    assemble(args.dest, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
