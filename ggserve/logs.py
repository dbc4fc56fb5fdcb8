"""Logging of every ggserve process in one format: text lines for people, or JSON lines for log
collectors (``--log-format json``), on stderr or appended to ``--log-file``.

A record may carry structured fields (``extra={"fields": {...}}``, as the per-request line does):
text lines show them as ``key=value`` after the message, JSON lines as top-level keys.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import msgspec

FORMATS = ("text", "json")
_RESERVED = frozenset({"time", "level", "process", "pid", "logger", "message"})


class TextFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s.%(msecs)03d {role:<11} %(levelname)-7s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, process role, pid, logger, message,
    the record's fields, and the traceback as ``exception`` when there is one."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": self._role,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            # A field never hides a standard key: it gets a prefix instead.
            entry.update({(f"field_{k}" if k in _RESERVED else k): v for k, v in fields.items()})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def _text(value: object) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    return text if text and " " not in text else msgspec.json.encode(text).decode()


def setup_logging(level: str, role: str, fmt: str = "text", file: str = "") -> None:
    """Configure the root logger of this process; ``role`` names the process in every line."""
    handler: logging.Handler
    if file:
        # Every process appends to the same file: O_APPEND keeps their lines whole.
        handler = logging.FileHandler(os.path.expanduser(file), mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else TextFormatter(role))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
