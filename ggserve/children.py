"""A supervised child process and its restart policy (back-off, give up when it fails too often)."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

log = logging.getLogger("ggserve")

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # delay before the k-th restart within the window
RESTART_WINDOW_S = 120.0


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    """One supervised process and its restart history."""

    name: str  # "scheduler", "executor N" or "frontend" (router mode: "MODEL/scheduler", ...)
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    failures: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None  # when to start it again after a failure
    restarts: int = 0  # since the server started (ggserve:restarts_total)

    @classmethod
    def module(cls, name: str, module: str, config_path: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """A child running ``python -m module --config config_path args``."""
        return cls(name, [sys.executable, "-m", module, "--config", config_path, *args], env or {})

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def spawn(self) -> None:
        self.proc = subprocess.Popen(self.args, env={**os.environ, **self.env}, process_group=0)
        self.restart_at = None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (None while it runs or was never started)."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL the child's whole process group (granian's workers too) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def failed(self, now: float, message: str, max_restarts: int) -> None:
        """Schedule a restart after the back-off; ChildFailed past ``max_restarts`` in the window."""
        while self.failures and now - self.failures[0] > RESTART_WINDOW_S:
            self.failures.popleft()
        self.failures.append(now)
        n = len(self.failures)
        if n > max_restarts:
            raise ChildFailed(f"{self.name} {message}; it failed {n} times within {RESTART_WINDOW_S:.0f}s")
        delay = BACKOFF_S[min(n, len(BACKOFF_S)) - 1]
        log.error("%s %s; restarting it in %.0fs", self.name, message, delay)
        self.restart_at = now + delay
