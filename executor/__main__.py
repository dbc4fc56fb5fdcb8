"""Executor process entry point: ``python -m executor --config PATH --id N``.

Connects to the scheduler, loads the model, reports ExecutorReady (or ExecutorError), then
answers each StepPlan with one StepResult until Shutdown. A frame it cannot read is logged and
dropped. It ignores SIGINT and SIGTERM: the launcher (or, when it hangs, a SIGKILL) stops it.
"""

from __future__ import annotations

import argparse
import logging
import sys

import zmq

from executor.engine import ModelEngine
from ggserve.config import load_config
from ggserve.process import setup_child
from ipc.protocol import EmbedPlan, ExecutorError, ExecutorReady, Shutdown, StepPlan
from ipc.transport import BadFrame, connect_dealer, executor_identity, recv, send

log = logging.getLogger("executor")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m executor")
    parser.add_argument("--config", required=True)
    parser.add_argument("--id", type=int, default=0)
    parser.add_argument("--connect", default="", help="scheduler executor endpoint (tcp://...)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    setup_child(cfg, f"executor-{args.id}")

    ctx = zmq.Context()
    sock = connect_dealer(ctx, args.connect or cfg.executor_endpoint, executor_identity(args.id), cfg.curve)
    try:
        engine = ModelEngine(cfg, args.id)
    except Exception as exc:  # report any load failure to the scheduler, then exit non-zero
        log.exception("executor %d failed to start", args.id)
        send(sock, ExecutorError(executor_id=args.id, message=str(exc)))
        sock.close(linger=1000)
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
    sock.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
