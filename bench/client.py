"""Streaming OpenAI-compatible client that times every token of every request.

Per request it records the time to first token (TTFT), the gaps between streamed chunks
(inter-token latencies), end-to-end latency and the output token count: from the server's
`usage` (requested with `stream_options.include_usage`) when it sends one, else the number of
non-empty chunks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from bench.workloads import Session, Turn

# How a request asks for exactly max_tokens output tokens: `ignore_eos` (llama-server, ggserve)
# or `min_tokens` (vLLM, llama-cpp-python's server, which ignore `ignore_eos`).
ExactOutput = Literal["ignore_eos", "min_tokens"]

PATHS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}


@dataclass
class RequestRecord:
    session: int
    turn: int
    input_len: int  # tokens of the turn's own text (the prompt, or the new user message)
    expected_output_tokens: int
    start: float = 0.0  # seconds from the start of the run to sending the request
    ttft: float | None = None
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)  # gaps between non-empty chunks
    output_tokens: int = 0
    prompt_tokens: int | None = None  # the server's usage.prompt_tokens, when given
    cached_tokens: int | None = None  # of those, served from its prefix cache, when it says
    tokens_from_usage: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (tokens - 1)."""
        if self.error or self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def api_root(base_url: str) -> str:
    """The server root, accepting a base URL given with or without its /v1."""
    return base_url.rstrip("/").removesuffix("/v1")


async def discover_model(http: httpx.AsyncClient) -> str:
    """The first model id the server lists at /v1/models."""
    response = await http.get("/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


class StreamingClient:
    def __init__(self, http: httpx.AsyncClient, model: str,
                 exact_output: ExactOutput = "ignore_eos") -> None:
        self._http = http
        self._model = model
        self._exact_output = exact_output

    async def run_session(self, index: int, session: Session, origin: float) -> list[RequestRecord]:
        """Send the session's turns in order; a failed turn ends the session.

        origin is the run's start on the time.perf_counter clock."""
        messages: list[dict[str, str]] = []
        if session.system:
            messages.append({"role": "system", "content": session.system})
        records = []
        for turn_index, turn in enumerate(session.turns):
            record = RequestRecord(index, turn_index, turn.input_len, turn.output_len)
            records.append(record)
            if session.api == "completions":
                payload: dict[str, Any] = {"prompt": turn.text}
            else:
                messages.append({"role": "user", "content": turn.text})
                payload = {"messages": messages}
            body = self._body(payload, turn)
            reply = await self._stream(PATHS[session.api], body, record, origin)
            if not record.ok:
                break
            messages.append({"role": "assistant", "content": reply})
        return records

    def _body(self, payload: dict[str, Any], turn: Turn) -> dict[str, Any]:
        body = {
            "model": self._model,
            **payload,
            "max_tokens": turn.output_len,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._exact_output == "ignore_eos":
            body["ignore_eos"] = True
        else:
            body["min_tokens"] = turn.output_len
        return body

    async def _stream(self, path: str, body: dict[str, Any], record: RequestRecord,
                      origin: float) -> str:
        """POST one streaming request, filling record; returns the generated text."""
        pieces: list[str] = []
        sent = time.perf_counter()
        record.start = sent - origin
        last_chunk: float | None = None
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    record.error = f"HTTP {response.status_code}: {detail}"
                    return ""
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": ping" comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        record.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                        return ""
                    if usage := chunk.get("usage"):
                        record.output_tokens = usage["completion_tokens"]
                        record.prompt_tokens = usage.get("prompt_tokens")
                        record.cached_tokens = (usage.get("prompt_tokens_details")
                                                or {}).get("cached_tokens")
                        record.tokens_from_usage = True
                    for choice in chunk.get("choices") or ():
                        piece = choice.get("text") if "text" in choice else (
                            (choice.get("delta") or {}).get("content"))
                        if not piece:
                            continue
                        now = time.perf_counter()
                        if last_chunk is None:
                            record.ttft = now - sent
                        else:
                            record.itl.append(now - last_chunk)
                        last_chunk = now
                        pieces.append(piece)
        except (httpx.HTTPError, json.JSONDecodeError, KeyError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            return ""
        record.e2e = time.perf_counter() - sent
        if not record.tokens_from_usage:
            record.output_tokens = len(pieces)
        if record.ttft is None:
            record.error = "the stream carried no tokens"
        return "".join(pieces)
