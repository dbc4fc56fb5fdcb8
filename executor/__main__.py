"""Executor process entry point: ``python -m executor --config PATH --id N``.

Connects to the scheduler, loads the model, reports ExecutorReady (or ExecutorError), then
answers each StepPlan with one StepResult until Shutdown. A frame it cannot read is logged and
dropped. It ignores SIGINT and SIGTERM: the launcher (or, when it hangs, a SIGKILL) stops it.

An embedding server whose processes all run on this machine (ipc:// endpoints) creates a
shared-memory arena for its vectors, named after this process (ipc.shm.executor_owner), and
unlinks it on the way out; the launcher unlinks it when the process dies instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import zmq

from executor.engine import ModelEngine
from ggserve.config import load_config
from ggserve.process import setup_child
from ipc.protocol import EmbedPlan, ExecutorError, ExecutorReady, Shutdown, StepPlan
from ipc.shm import Arena, executor_owner, run_id_of
from ipc.transport import BadFrame, connect_dealer, executor_identity, is_tcp, recv, send

log = logging.getLogger("executor")

# Vectors waiting to be read by the frontends: ~26k 640-wide pooled ones, or a few steps of
# per-token rows (pooling none); a step that finds no room sends its rows inside its message.
ARENA_BYTES = 64 * 2**20


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m executor")
    parser.add_argument("--config", required=True)
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--connect", default="", help="scheduler executor endpoint (tcp://...)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    setup_child(cfg, f"executor-{args.id}")

    ctx = zmq.Context()
    endpoint = args.connect or cfg.executor_endpoint
    sock = connect_dealer(ctx, endpoint, executor_identity(args.id), cfg.curve)
    arena = None
    try:
        if cfg.embeddings and not is_tcp(endpoint) and not is_tcp(cfg.scheduler_endpoint):
            arena = _arena(cfg.run_dir, args.id)
        engine = ModelEngine(cfg, args.id, arena)
    except Exception as exc:  # report any load failure to the scheduler, then exit non-zero
        log.exception("executor %d failed to start", args.id)
        send(sock, ExecutorError(executor_id=args.id, message=str(exc)))
        sock.close(linger=1000)
        _drop(arena)
        return 1
    send(sock, ExecutorReady(info=engine.info))
    while True:
        try:
            msg = recv(sock)
        except BadFrame as exc:
            log.warning("executor %d: dropped a bad frame: %s", args.id, exc)
            continue
        if isinstance(msg, StepPlan):
            send(sock, engine.step(msg))
        elif isinstance(msg, EmbedPlan):
            send(sock, engine.embed(msg))
        elif isinstance(msg, Shutdown):
            break
        else:
            log.warning("executor %d: dropped an unexpected %s", args.id, type(msg).__name__)
    engine.close()
    _drop(arena)
    sock.close()
    ctx.term()
    return 0


def _arena(run_dir: str, executor_id: int) -> Arena | None:
    """This process's vector arena; None (vectors in the messages) when /dev/shm has no room."""
    try:
        return Arena(run_id_of(run_dir), executor_owner(executor_id, os.getpid()), ARENA_BYTES)
    except OSError as exc:
        log.warning("executor %d: no shared-memory arena (%s): vectors go inside the messages", executor_id, exc)
        return None


def _drop(arena: Arena | None) -> None:
    if arena is not None:
        arena.close()
        arena.unlink()


if __name__ == "__main__":
    sys.exit(main())
