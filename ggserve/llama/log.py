"""Route llama.cpp's (and its mtmd's) log lines into Python logging and pick out the facts operators need.

llama.cpp prints a lot at INFO while loading; we keep it at DEBUG, surface warnings and errors,
and remember the KV buffer sizes it reports (the only exact figure of KV memory it gives).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import threading
from collections.abc import Iterator

import llama_cpp
from llama_cpp import mtmd_cpp

log = logging.getLogger("llama.cpp")

_LEVELS = {2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level
_KV_SIZE = re.compile(r"KV buffer size\s*=\s*([0-9.]+)\s*MiB")


class LlamaLogCapture:
    """Installs the process-wide llama.cpp log callback.

    The last one installed stays referenced by the class: llama.cpp keeps calling the C pointer
    after its owner (e.g. a test's Tokenizer) is collected, and a freed ctypes callback crashes.
    Since only the last one hears llama.cpp, what collect_problems gathers is the class's too:
    any capture collects, whichever was installed last (a router-mode worker holds a Tokenizer,
    and so a capture, per model), one block at a time.
    """

    _installed: LlamaLogCapture | None = None
    _collected: list[str] | None = None  # the lines of the collect_problems block running
    _collecting = threading.Lock()

    def __init__(self) -> None:
        self.kv_bytes = 0
        self._pending = ""
        self._callback = llama_cpp.llama_log_callback(self._on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(self._callback, ctypes.c_void_p(0))  # the multimodal projector's too
        LlamaLogCapture._installed = self

    def _on_log(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        line = self._pending + text.decode("utf-8", errors="replace")
        if not line.endswith("\n"):  # llama.cpp continues lines with GGML_LOG_LEVEL_CONT
            self._pending = line
            return
        self._pending = ""
        line = line.rstrip()
        match = _KV_SIZE.search(line)
        if match:
            self.kv_bytes += int(float(match.group(1)) * 1024 * 1024)
        collected = LlamaLogCapture._collected
        if collected is not None and level >= 3:
            collected.append(line)
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", line)

    @contextlib.contextmanager
    def collect_problems(self) -> Iterator[list[str]]:
        """The warning and error lines llama.cpp logs inside the block."""
        lines: list[str] = []
        with LlamaLogCapture._collecting:
            LlamaLogCapture._collected = lines
            try:
                yield lines
            finally:
                LlamaLogCapture._collected = None
