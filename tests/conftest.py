"""Shared fixtures: real ggserve servers on the embedded default model.

One server runs at a time (2-core machines): ``server`` lives for one test module, and
``start_server`` starts a private one with other flags for tests that need them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from frontend.text.tokenizer import Tokenizer
from frontend_support import gemma_path
from ipc.shm import Arena

# /metrics and POST /props are off by default, as in llama-server; the tests use them.
DEFAULT_ARGS = ("-np", "4", "-c", "2048", "-t", "2", "--metrics", "--props")
START_TIMEOUT = 180.0


@dataclass
class ServerHandle:
    proc: subprocess.Popen
    port: int
    log_path: str
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def start_server(*extra_args: str, ready: bool = True, base_args: tuple[str, ...] = DEFAULT_ARGS
                 ) -> Iterator[ServerHandle]:
    """Run ``ggserve serve`` with ``base_args`` overridden by ``extra_args``; wait for /health."""
    port = free_port()
    log_file = tempfile.NamedTemporaryFile("w", prefix="ggserve-test-", suffix=".log", delete=False)
    args = [sys.executable, "-m", "ggserve", "serve", "--port", str(port), *base_args, *extra_args]
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    handle = ServerHandle(proc, port, log_file.name, "https" if "--ssl-certfile" in extra_args else "http")
    try:
        if ready:
            _wait_ready(handle)
        yield handle
    finally:
        _stop(proc)
        log_file.close()
        os.unlink(log_file.name)


@contextlib.contextmanager
def template_server(template: str, *extra_args: str) -> Iterator[ServerHandle]:
    """``start_server`` with ``template`` as its chat template (``--chat-template-file``)."""
    with tempfile.TemporaryDirectory(prefix="ggserve-template-") as directory:
        path = Path(directory) / "template.jinja"
        path.write_text(template)
        with start_server("--chat-template-file", str(path), *extra_args) as handle:
            yield handle


def _wait_ready(handle: ServerHandle) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if handle.proc.poll() is not None:
            raise RuntimeError(f"ggserve exited with {handle.proc.returncode}:\n{handle.log()}")
        try:
            if httpx.get(f"{handle.base_url}/health", timeout=2, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ggserve did not become ready:\n{handle.log()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    with start_server() as handle:
        yield handle


@pytest.fixture(scope="module")
def arena() -> Iterator[Arena]:
    """A shared-memory arena to hand an executor media chunks from, as a frontend does."""
    a = Arena(uuid.uuid4().hex[:8], f"test-{os.getpid()}", 1 << 20)
    yield a
    a.close()
    a.unlink()


@pytest.fixture(scope="session")
def tokenizer() -> Iterator[Tokenizer]:
    """The embedded model's vocabulary (no weights), shared by the tests that tokenize."""
    tok = Tokenizer(gemma_path())
    yield tok
    tok.close()


@pytest.fixture(scope="session")
def lora_adapters() -> dict[str, str]:
    """LoRA adapters for the default model, written once into the test cache: "a" and "b" (two
    different random adapters; "a" has a task name), "wrong_shape" (for another model)."""
    from ggserve.models.resolve import resolve_model
    from lora_adapter import write_adapter
    from tiny_models import cache_dir

    base, folder = resolve_model(None), cache_dir() / "lora-adapters"
    folder.mkdir(exist_ok=True)
    return {
        "a": str(write_adapter(base, folder / "a.gguf", seed=1, task_name="style")),
        "b": str(write_adapter(base, folder / "b.gguf", seed=2)),
        "wrong_shape": str(write_adapter(base, folder / "wrong-shape.gguf", seed=3, wrong_shape=True)),
    }
