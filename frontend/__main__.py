"""``python -m frontend --config <run_dir>/config.json``: serve the HTTP API with granian.

granian forks ``http_workers`` worker processes; each builds its own app through the
``frontend.app:create_app`` factory, which finds the configuration in an environment variable.
granian restarts a worker that dies. Neither granian's main process nor its workers act on
SIGINT/SIGTERM: the launcher drains the engine first and then kills this process group.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from frontend.app import CONFIG_ENV
from ggserve.config import load_config
from ggserve.process import setup_child

# granian's default wait for a request's headers; --timeout only shortens it (a longer one would
# let idle or slow connections hold the server's sockets longer).
HEADER_TIMEOUT_S = 30.0


class _Server(Server):
    def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
        """Ignore SIGINT/SIGTERM (granian would stop its workers and drop their streams)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m frontend", description=__doc__)
    parser.add_argument("--config", required=True, help="ServeConfig JSON written by the launcher")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    setup_child(cfg, "frontend")
    os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    _Server(
        "frontend.app:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=cfg.host,
        port=cfg.port,
        workers=cfg.http_workers,
        ssl_cert=Path(cfg.ssl_certfile) if cfg.ssl_certfile else None,
        ssl_key=Path(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
        log_level=LogLevels(cfg.log_level.lower()),
        # granian's own lines go through this process's handler: one format (text or JSON), one file.
        log_dictconfig={"loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": True}}},
        respawn_failed_workers=True,
        http1_settings=HTTP1Settings(header_read_timeout=int(min(cfg.timeout, HEADER_TIMEOUT_S) * 1000)),
    ).serve()


if __name__ == "__main__":
    main()
