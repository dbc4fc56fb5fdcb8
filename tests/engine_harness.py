"""Run the real engine (scheduler + executors, no HTTP) and talk to it over ZeroMQ like a frontend."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import llama_cpp
import zmq

from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.launcher import Launcher
from ggserve.models.resolve import resolve_model
from ipc.protocol import (
    Abort,
    AddRequest,
    AddRequests,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    RequestOutputs,
    RequestStats,
    SamplingParams,
    StatsRequest,
    TokenLogprob,
)
from ipc.transport import CurveKeys, connect_dealer, recv, send

GREEDY = SamplingParams(temperature=0)


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    error: EngineError | None = None
    stats: RequestStats | None = None
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)

    def top2_gap(self, step: int) -> float:
        top = self.logprobs[step].top
        return top[0][1] - top[1][1]


class Tokenizer:
    def __init__(self, model_path: str) -> None:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)

    def encode(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, False)
        return list(buf[:n])

    def decode(self, tokens: list[int]) -> str:
        out = bytearray()
        piece = ctypes.create_string_buffer(256)
        for t in tokens:
            n = llama_cpp.llama_token_to_piece(self.vocab, t, piece, len(piece), 0, False)
            out += piece.raw[:n]
        return out.decode(errors="replace")


class EngineClient:
    def __init__(self, endpoint: str, keys: CurveKeys | None = None) -> None:
        self.zmq = zmq.Context()
        self.sock = connect_dealer(self.zmq, endpoint, f"test-{uuid.uuid4().hex[:8]}".encode(), keys)
        self.results: dict[str, Result] = {}
        self._ids = 0

    def submit(self, prompt: list[int], max_tokens: int, **kw) -> str:
        self._ids += 1
        rid = f"req-{self._ids}"
        kw.setdefault("sampling", GREEDY)
        send(self.sock, AddRequest(rid, prompt, max_tokens, **kw))
        self.results[rid] = Result()
        return rid

    def abort(self, rid: str) -> None:
        send(self.sock, Abort([rid]))

    def pump(self, timeout: float = 60.0) -> None:
        """Receive one RequestOutputs message (fail if none arrives in time)."""
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("no output from the engine")
        msg = recv(self.sock)
        if not isinstance(msg, RequestOutputs):
            return
        for out in msg.outputs:
            res = self.results[out.request_id]
            assert res.finish_reason is None, "output after the terminal one"
            res.tokens += out.token_ids
            res.logprobs += out.logprobs
            res.prompt_logprobs += out.prompt_logprobs
            if out.finish_reason is not None:
                res.finish_reason, res.error, res.stats = out.finish_reason, out.error, out.stats

    def wait(self, rids: list[str], timeout: float = 300.0) -> list[Result]:
        deadline = time.monotonic() + timeout
        while any(self.results[r].finish_reason is None for r in rids):
            self.pump(max(0.1, deadline - time.monotonic()))
        return [self.results[r] for r in rids]

    def generate(self, prompts: list[list[int]], max_tokens: int, together: bool = False, **kw) -> list[Result]:
        """``together``: in one AddRequests message (as one API call's requests), so the
        scheduler sees them at once and starts them in the same step, whatever the machine's load."""
        if not together:
            return self.wait([self.submit(p, max_tokens, **kw) for p in prompts])
        kw.setdefault("sampling", GREEDY)
        first = self._ids + 1
        self._ids += len(prompts)
        rids = [f"req-{first + i}" for i in range(len(prompts))]
        send(self.sock, AddRequests([AddRequest(rid, p, max_tokens, **kw) for rid, p in zip(rids, prompts)]))
        self.results.update({rid: Result() for rid in rids})
        return self.wait(rids)

    def stats(self) -> EngineStats:
        send(self.sock, StatsRequest(token=1))
        while True:
            if not self.sock.poll(30_000):
                raise TimeoutError("no stats")
            msg = recv(self.sock)
            if isinstance(msg, EngineStats):
                return msg
            for out in msg.outputs if isinstance(msg, RequestOutputs) else []:  # keep outputs meanwhile
                self.results[out.request_id].tokens += out.token_ids

    def close(self) -> None:
        self.sock.close(linger=0)
        self.zmq.term()


@dataclass
class Engine:
    launcher: Launcher
    info: EngineInfo
    client: EngineClient
    tokenizer: Tokenizer
    supervisor: threading.Thread
    exit_code: list[int]


@contextlib.contextmanager
def running_engine(**overrides) -> Iterator[Engine]:
    settings = dict(n_parallel=4, ctx_size=2048, threads=2, repack=not cpu_has_amx())
    settings.update(overrides)
    cfg = ServeConfig(model=resolve_model(settings.pop("model", None)), **settings)
    launcher = Launcher(cfg)
    info = launcher.start(http=False)
    exit_code: list[int] = []
    supervisor = threading.Thread(target=lambda: exit_code.append(launcher.supervise()), daemon=True)
    supervisor.start()
    client = EngineClient(launcher.cfg.scheduler_endpoint, launcher.cfg.curve)
    try:
        yield Engine(launcher, info, client, Tokenizer(cfg.model), supervisor, exit_code)
    finally:
        client.close()
        launcher.request_stop()
        supervisor.join(10)
        launcher.shutdown()
