"""Scheduler process entry point: ``python -m scheduler --config PATH``."""

from __future__ import annotations

import argparse
import signal
import sys

from ggserve.config import load_config
from ggserve.process import setup_child
from scheduler.loop import SchedulerLoop


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    cfg = load_config(args.config)
    setup_child(cfg, "scheduler")
    loop = SchedulerLoop(cfg)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
