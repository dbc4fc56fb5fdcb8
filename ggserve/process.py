"""What every child process does first: logging in one format, and dying with its parent."""

from __future__ import annotations

import ctypes
import logging
import os
import signal

from ggserve.config import ServeConfig

_PR_SET_PDEATHSIG = 1


def setup_logging(level: str, role: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s.%(msecs)03d {role:<11} %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the launcher dies, so nothing is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() == 1:  # the parent is already gone
        os.kill(os.getpid(), signal.SIGTERM)


def setup_child(cfg: ServeConfig, role: str) -> None:
    setup_logging(cfg.log_level, role)
    die_with_parent()
    # The launcher handles Ctrl-C for the whole group and sends Shutdown/SIGTERM to children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
