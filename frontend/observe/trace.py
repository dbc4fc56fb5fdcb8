"""What one HTTP request did: its log line and its observations in the request histograms.

The app opens a ``RequestTrace`` when a request arrives; a generation adds each of its engine
requests (one per choice and prompt) as it ends; once the response is sent, the app closes the
trace: one log line (id, endpoint, status, prompt / cached / generated tokens, time to first
token, total time, executor and slot) and one histogram observation per engine request. The
line is at info level, except for the endpoints that monitoring polls (debug).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from frontend.observe import metrics
from ipc.protocol import RequestStats

log = logging.getLogger("ggserve.requests")

_POLLED = frozenset({"/health", "/v1/health", "/metrics", "/slots"})


@dataclass(slots=True)
class ChoiceTrace:
    """One engine request, as it ended."""

    prompt_tokens: int
    generated_tokens: int
    first_of_prompt: bool  # the prompt counts once in the totals, whatever the number of choices
    first_token_at: float | None  # time.monotonic(); None: it generated nothing
    ended_at: float
    stats: RequestStats | None  # None when the client left before the engine's last word
    error: str = ""  # the engine failed it (a stream reports that in an event, its status stays 200)


@dataclass(slots=True)
class RequestTrace:
    id: str
    method: str
    path: str
    received_at: float = field(default_factory=time.monotonic)
    status: int = 0  # of the response sent
    error: str = ""  # the error's message, when the response is one (or a stream ended by one)
    disconnected: bool = False  # the client left before the response ended
    choices: list[ChoiceTrace] = field(default_factory=list)
    model: str = ""  # router mode: the model the request named
    resumable: bool = False  # a resumable stream's: closed when its generation ends, not its response

    def close(self) -> None:
        now = time.monotonic()
        for c in self.choices:
            metrics.observe_request(
                self.model, c.prompt_tokens, c.generated_tokens, c.ended_at - self.received_at,
                None if c.first_token_at is None else c.first_token_at - self.received_at,
                None if c.stats is None else c.stats.queue_ms / 1000)
        level = logging.DEBUG if self.path in _POLLED else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %d", self.method, self.path, self.status, extra={"fields": self._fields(now)})

    def _fields(self, now: float) -> dict[str, object]:
        fields: dict[str, object] = {"id": self.id, "endpoint": self.path, "status": self.status}
        if self.model:
            fields["model"] = self.model
        if self.choices:
            firsts = [c for c in self.choices if c.first_of_prompt]
            stats = [c.stats for c in self.choices if c.stats is not None]
            first_tokens = [c.first_token_at for c in self.choices if c.first_token_at is not None]
            fields |= {
                "prompt_tokens": sum(c.prompt_tokens for c in firsts),
                "cached_tokens": sum(c.stats.n_cached_tokens for c in firsts if c.stats is not None),
                "generated_tokens": sum(c.generated_tokens for c in self.choices),
                "ttft_ms": round((min(first_tokens) - self.received_at) * 1000, 1) if first_tokens else None,
                "executor": ",".join(str(s.executor_id) for s in stats),
                "slot": ",".join(str(s.slot_id) for s in stats),
            }
        fields["total_ms"] = round((now - self.received_at) * 1000, 1)
        if self.disconnected:
            fields["disconnected"] = True
        error = self.error or next((c.error for c in self.choices if c.error), "")
        if error:
            fields["error"] = error
        return fields
