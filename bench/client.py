"""Streaming OpenAI-compatible client that times every token of every request.

Per request it records the time to first token (TTFT), the gaps between streamed chunks
(inter-token latencies), end-to-end latency and the output token count: from the server's
`usage` (requested with `stream_options.include_usage`) when it sends one, else the number of
non-empty chunks. Prompt tokens taken from the server's cache come from
`usage.prompt_tokens_details.cached_tokens`, else from llama-server's own fields.

A session runs turn by turn through a `Conversation`, which holds its chat history, so a runner
may send one session's turns back to back or interleave them with other sessions'.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from bench.sampling import Sampling
from bench.workloads import Session

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
    group: str = ""  # the turn's group (bench.workloads.Turn.group)
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


@dataclass
class Conversation:
    """A session between its turns: the chat history so far (chat only), and whether a turn
    failed, which ends it."""

    index: int
    session: Session
    messages: list[dict[str, str]] = field(default_factory=list)
    failed: bool = False

    @classmethod
    def start(cls, index: int, session: Session) -> Conversation:
        system = [{"role": "system", "content": session.system}] if session.system else []
        return cls(index, session, system)


def cached_tokens(chunk: dict[str, Any]) -> int | None:
    """Prompt tokens the server took from its cache, if this chunk says: the OpenAI usage field,
    else llama-server's timings.cache_n, else its native API's tokens_cached."""
    details = (chunk.get("usage") or {}).get("prompt_tokens_details") or {}
    for value in (details.get("cached_tokens"), (chunk.get("timings") or {}).get("cache_n"),
                  chunk.get("tokens_cached")):
        if value is not None:
            return value
    return None


class StreamingClient:
    def __init__(self, http: httpx.AsyncClient, model: str,
                 exact_output: ExactOutput = "ignore_eos", sampling: Sampling = Sampling()) -> None:
        self._http = http
        self._model = model
        self._exact_output = exact_output
        self._sampling = sampling

    async def run_session(self, index: int, session: Session, origin: float) -> list[RequestRecord]:
        """Send the session's turns in order; a failed turn ends the session.

        origin is the run's start on the time.perf_counter clock."""
        conversation = Conversation.start(index, session)
        records = []
        for turn_index in range(len(session.turns)):
            records.append(await self.run_turn(conversation, turn_index, origin))
            if conversation.failed:
                break
        return records

    async def run_turn(self, conversation: Conversation, turn_index: int,
                       origin: float) -> RequestRecord:
        """Send one turn of the conversation (after the history so far, for chat) and, if it
        succeeds, add it and the reply to the history."""
        turn = conversation.session.turns[turn_index]
        record = RequestRecord(conversation.index, turn_index, turn.input_len, turn.output_len,
                               turn.group)
        api = conversation.session.api
        user = {"role": "user", "content": turn.text}
        if api == "completions":
            payload: dict[str, Any] = {"prompt": turn.text}
        else:
            payload = {"messages": [*conversation.messages, user]}
        body = self._body(payload, record)
        reply = await self._stream(PATHS[api], body, record, origin)
        conversation.failed = not record.ok
        if record.ok and api == "chat":
            conversation.messages += [user, {"role": "assistant", "content": reply}]
        return record

    def _body(self, payload: dict[str, Any], record: RequestRecord) -> dict[str, Any]:
        body = {
            "model": self._model,
            **payload,
            "max_tokens": record.expected_output_tokens,
            **self._sampling.params(record.session, record.turn),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._exact_output == "ignore_eos":
            body["ignore_eos"] = True
        else:
            body["min_tokens"] = record.expected_output_tokens
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
                        record.tokens_from_usage = True
                    if (cached := cached_tokens(chunk)) is not None:
                        record.cached_tokens = cached
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
