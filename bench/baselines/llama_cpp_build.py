"""Obtain llama-server and llama-batched-bench built from the pinned llama-cpp-python sdist.

The sdist vendors llama.cpp at the exact commit whose kernels ggserve runs, so binaries built
from it compare servers on identical kernels. The sdist is downloaded with pip, unpacked and
built with CMake into a cache directory outside the repository, once; later calls reuse it.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
from pathlib import Path

TARGETS = ("llama-server", "llama-batched-bench")
# LLAMA_USE_PREBUILT_UI=OFF: the server's web UI would otherwise be fetched from Hugging Face at
# build time; the benchmark needs no UI and this machine talks to no hub.
CMAKE_OPTIONS = ("-DLLAMA_BUILD_SERVER=ON", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF")


def pinned_version() -> str:
    """The llama-cpp-python version installed here: the one whose kernels ggserve uses."""
    return importlib.metadata.version("llama-cpp-python")


def cache_dir(version: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ggserve" / f"llama.cpp-{version}"


def _log(message: str) -> None:
    print(f"[bench.build] {message}", file=sys.stderr, flush=True)


def source_tree(version: str) -> Path:
    """The vendored llama.cpp tree of the sdist, downloading and unpacking it if needed."""
    root = cache_dir(version)
    tree = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        _log(f"downloading the llama-cpp-python {version} sdist into {root}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "--dest", str(root)],
            check=True, stdout=sys.stderr,
        )
    _log(f"unpacking {sdist.name}")
    with tarfile.open(sdist) as archive:
        archive.extractall(root, filter="data")
    return tree


def binary_paths(version: str) -> dict[str, Path]:
    bin_dir = cache_dir(version) / "build" / "bin"
    return {target: bin_dir / target for target in TARGETS}


def cmake_build(tree: Path, build: Path, options: tuple[str, ...], targets: tuple[str, ...],
                jobs: int | None = None) -> None:
    """Configure the llama.cpp tree into ``build`` with ``options`` and build ``targets``."""
    jobs = jobs or os.cpu_count() or 1
    _log(f"building {', '.join(targets)} from {tree} into {build} "
         f"with {jobs} jobs (several minutes on a small CPU; done once)")
    subprocess.run(["cmake", "-S", str(tree), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *options],
                   check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", str(build), "--config", "Release", "--target", *targets,
                    "-j", str(jobs)], check=True, stdout=sys.stderr)


def ensure_built(version: str | None = None, jobs: int | None = None) -> dict[str, Path]:
    """Paths of the llama.cpp binaries, building them first if the cache lacks any."""
    version = version or pinned_version()
    binaries = binary_paths(version)
    if all(path.is_file() for path in binaries.values()):
        return binaries
    cmake_build(source_tree(version), cache_dir(version) / "build", CMAKE_OPTIONS, TARGETS, jobs)
    missing = [str(path) for path in binaries.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"build finished but binaries are missing: {missing}")
    _log(f"built {', '.join(str(path) for path in binaries.values())}")
    return binaries
