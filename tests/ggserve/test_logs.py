"""Log lines of every process: text for people, one JSON object per line for collectors."""

from __future__ import annotations

import json
import logging
import sys

from ggserve.logs import JsonFormatter, TextFormatter


def _record(message: str, fields: dict[str, object] | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("ggserve.requests", logging.INFO, __file__, 1, message, (), exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_json_lines_carry_the_fields_as_keys() -> None:
    fields = {"id": "abc", "status": 200, "ttft_ms": 12.5, "executor": "0", "message": "not the message"}
    entry = json.loads(JsonFormatter("frontend").format(_record("POST /v1/completions 200", fields)))
    assert entry["message"] == "POST /v1/completions 200" and entry["field_message"] == "not the message"
    assert (entry["level"], entry["process"], entry["logger"]) == ("info", "frontend", "ggserve.requests")
    assert (entry["id"], entry["status"], entry["ttft_ms"], entry["executor"]) == ("abc", 200, 12.5, "0")
    assert entry["time"].endswith("+00:00")
    with_traceback = json.loads(JsonFormatter("scheduler").format(_record("failed", exc=True)))
    assert "ValueError: boom" in with_traceback["exception"]


def test_text_lines_show_the_fields_as_key_value() -> None:
    line = TextFormatter("frontend").format(_record("GET /slots 200", {"id": "abc", "total_ms": 3.14159,
                                                                         "error": "no slot available"}))
    assert line.endswith('GET /slots 200 id=abc total_ms=3.1 error="no slot available"')
    assert " frontend " in line and " INFO " in line
