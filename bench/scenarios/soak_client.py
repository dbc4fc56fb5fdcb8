"""One request of a soak run: what it asks, and how it ended.

A soak cares less about speed than about every request ending, and ending in a way the client can
tell: a response, an HTTP error status, or, once a stream has started with status 200, an SSE
error event (`data: {"error": ...}`) before the stream closes. A request that does not end within
the client's deadline, or a stream that closes with neither `data: [DONE]` nor an error event,
left its client hanging or guessing: those are counted as hung.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from bench.client import PATHS
from bench.tokenizer import TextMaker
from bench.workloads import LengthDist


class Outcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http error"  # a status >= 400 (or another non-200) with its body
    STREAM_ERROR = "stream error"  # an error event ended a 200 stream
    CONNECT_ERROR = "connect error"  # nothing listening (the server is down)
    BAD_RESPONSE = "bad response"  # a 200 whose body is not a completion, or not JSON
    TRUNCATED = "truncated"  # the connection closed before a complete response
    TIMEOUT = "timeout"  # no end within the client's deadline


HUNG = frozenset({Outcome.TRUNCATED, Outcome.TIMEOUT})


@dataclass(frozen=True)
class RequestKind:
    api: str  # a key of bench.client.PATHS
    stream: bool

    @property
    def label(self) -> str:
        return f"{self.api}{' stream' if self.stream else ''}"


KINDS = tuple(RequestKind(api, stream) for api in ("chat", "completions")
              for stream in (True, False))


@dataclass
class SoakRecord:
    client: int
    kind: str  # RequestKind.label
    start: float  # seconds since the start of the run
    end: float = 0.0
    outcome: Outcome = Outcome.OK
    detail: str = ""  # the error, for anything but OK
    ttft: float | None = None  # streams: seconds to the first event with generated text

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def hung(self) -> bool:
        return self.outcome in HUNG


class StreamReader:
    """Follows an SSE body line by line and says how the stream ended."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None  # None: not ended yet
        self.detail = ""
        self.has_text = False

    def feed(self, line: str) -> bool:
        """Take one line; True once the stream has ended (nothing after it counts)."""
        if not line.startswith("data:"):
            return False  # blank separators, ": ping" comments
        data = line[5:].strip()
        if data == "[DONE]":
            self.outcome = Outcome.OK
            return True
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            self.outcome, self.detail = Outcome.BAD_RESPONSE, f"not JSON: {data[:200]}"
            return True
        if isinstance(event, dict) and event.get("error"):
            self.outcome = Outcome.STREAM_ERROR
            self.detail = json.dumps(event["error"])[:300]
            return True
        for choice in (event.get("choices") or ()) if isinstance(event, dict) else ():
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                self.has_text = True
        return False

    def close(self) -> tuple[Outcome, str]:
        """The body ended (or reading stopped at its end): how the stream ended, and the error.
        A stream that never reached [DONE] or an error event was cut short."""
        if self.outcome is None:
            self.outcome, self.detail = Outcome.TRUNCATED, "closed without [DONE] or an error"
        return self.outcome, self.detail


def classify_reply(status: int, body: bytes) -> tuple[Outcome, str]:
    """Outcome of a complete non-streaming response."""
    if status != 200:
        return Outcome.HTTP_ERROR, f"HTTP {status}: {body[:300].decode(errors='replace')}"
    try:
        reply = json.loads(body)
    except json.JSONDecodeError:
        return Outcome.BAD_RESPONSE, f"not JSON: {body[:200].decode(errors='replace')}"
    if not isinstance(reply, dict) or not reply.get("choices"):
        return Outcome.BAD_RESPONSE, f"no choices: {body[:200].decode(errors='replace')}"
    return Outcome.OK, ""


class PromptMaker:
    """Short random prompts; chat requests open with one of a few system prompts, so some share
    a prefix the server can reuse and most of each prompt is new to it."""

    SYSTEM_PROMPTS = 4
    SYSTEM_LEN = 32

    def __init__(self, texts: TextMaker, input_len: LengthDist, output_len: LengthDist,
                 seed: int) -> None:
        self._texts = texts
        self._input_len = input_len
        self._output_len = output_len
        rng = random.Random(f"{seed}:system")
        self._systems = [texts.text(self.SYSTEM_LEN, rng) for _ in range(self.SYSTEM_PROMPTS)]

    def body(self, kind: RequestKind, model: str, rng: random.Random) -> dict[str, Any]:
        text = self._texts.text(self._input_len.sample(rng), rng)
        body: dict[str, Any] = {"model": model, "max_tokens": self._output_len.sample(rng),
                                "ignore_eos": True, "stream": kind.stream}
        if kind.api == "chat":
            body["messages"] = [{"role": "system", "content": rng.choice(self._systems)},
                                {"role": "user", "content": text}]
        else:
            body["prompt"] = text
        if kind.stream:
            body["stream_options"] = {"include_usage": True}
        # greedy and sampled requests: both sampler chains are built and freed all the time
        if rng.random() < 0.5:
            body["temperature"] = 0.0
        else:
            body |= {"temperature": 0.8, "top_p": 0.95, "seed": rng.randrange(2**31)}
        return body


async def send(http: httpx.AsyncClient, kind: RequestKind, body: dict[str, Any],
               record: SoakRecord, timeout: float, origin: float) -> None:
    """Send one request and fill record's outcome; never waits longer than timeout seconds.

    The deadline covers the whole request: httpx's own timeouts are per read, and a server that
    sends a ": ping" every few seconds but never ends the stream would never trip them."""
    sent = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if kind.stream:
                await _stream(http, PATHS[kind.api], body, record, sent)
            else:
                response = await http.post(PATHS[kind.api], json=body)
                record.outcome, record.detail = classify_reply(response.status_code,
                                                               response.content)
    except TimeoutError:
        record.outcome, record.detail = Outcome.TIMEOUT, f"no end after {timeout:g} s"
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        record.outcome, record.detail = Outcome.CONNECT_ERROR, f"{type(exc).__name__}: {exc}"
    except httpx.TimeoutException as exc:  # httpx's per-read timeout, set to the same value
        record.outcome, record.detail = Outcome.TIMEOUT, f"{type(exc).__name__}: {exc}"
    except httpx.HTTPError as exc:  # the connection closed or broke mid-response
        record.outcome, record.detail = Outcome.TRUNCATED, f"{type(exc).__name__}: {exc}"
    record.end = time.monotonic() - origin


async def _stream(http: httpx.AsyncClient, path: str, body: dict[str, Any], record: SoakRecord,
                  sent: float) -> None:
    async with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            record.outcome, record.detail = classify_reply(response.status_code,
                                                           await response.aread())
            return
        reader = StreamReader()
        async for line in response.aiter_lines():
            if reader.feed(line):
                break
            if reader.has_text and record.ttft is None:
                record.ttft = time.monotonic() - sent
        record.outcome, record.detail = reader.close()
