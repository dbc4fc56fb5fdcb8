"""What every child process does first: logging in one format, and dying with its parent."""

from __future__ import annotations

import ctypes
import os
import signal

from ggserve.config import ServeConfig
from ggserve.logs import setup_logging

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so nothing is ever orphaned, even
    when the launcher itself is SIGKILLed (children ignore SIGTERM, so it must be SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGKILL)


def ignore_stop_signals() -> None:
    """SIGINT (Ctrl-C reaches the whole foreground group) and SIGTERM (systemd and docker may
    signal every process) are the launcher's to handle: it drains, then stops its children."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def setup_child(cfg: ServeConfig, role: str) -> None:
    setup_logging(cfg.log_level, f"{role}:{cfg.model_name}" if cfg.model_name else role, cfg.log_format, cfg.log_file)
    die_with_parent()
    ignore_stop_signals()
