"""Scheduler process entry point: ``python -m scheduler --config PATH``.

It ignores SIGINT and SIGTERM (see ggserve.process): the launcher drives the order of a shutdown
(Drain, then Shutdown) and kills it only as a last resort.
"""

from __future__ import annotations

import argparse
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
    SchedulerLoop(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
