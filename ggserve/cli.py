"""The ``ggserve`` command: ``serve`` starts the server, ``bench`` load-tests one.

Flag names follow llama-server's wherever the meaning is the same, so its users can switch.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Sequence

import msgspec

from ggserve.config import ModelSpec, ServeConfig
from ggserve.engine_group import log_engine
from ggserve.flags.env import apply_env_defaults
from ggserve.flags.parser import serve_parser, version_text
from ggserve.flags.presets import router_models
from ggserve.flags.serve_config import UsageError, engine_config
from ggserve.launcher import ChildFailed, Launcher, StartInterrupted
from ggserve.logs import setup_logging
from ggserve.models.resolve import check_header
from ggserve.models.sources import ModelSourceError

log = logging.getLogger("ggserve")


def config_from_args(args: argparse.Namespace, argv: Sequence[str] = ()) -> ServeConfig:
    """The server's configuration; ``argv`` (the command line after ``serve``) is needed with
    --models-preset, whose flags the command line's own override."""
    cfg = engine_config(args)
    if not (args.models_dir or args.models_preset):
        if args.sleep_idle_seconds > 0:  # one model that sleeps: a router of one, loaded at start
            model = ModelSpec(name=cfg.model_alias, path=cfg.model, aliases=cfg.aliases, tags=cfg.tags,
                              load_on_startup=True)
            return msgspec.structs.replace(cfg, models=[model], models_single=True, models_max=1)
        return cfg
    if args.model:
        raise UsageError("ggserve: -m and --models-dir/--models-preset exclude each other")
    if args.scheduler_endpoint or args.executor_endpoint:
        raise UsageError("ggserve: router mode keeps each model's engine on this host (no --scheduler-endpoint "
                         "or --executor-endpoint)")
    if args.models_max < 0:
        raise UsageError("ggserve: --models-max cannot be negative (0: no limit)")
    try:
        models = router_models(cfg, args, list(argv))
    except ModelSourceError as exc:
        raise UsageError(f"ggserve: {exc}") from None
    if not models:
        raise UsageError("ggserve: no model found in --models-dir / --models-preset")
    return msgspec.structs.replace(cfg, models=models)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    try:
        return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                   for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def _warn_about(cfg: ServeConfig, args: argparse.Namespace) -> None:
    if args.metrics_key_required:
        log.warning("--metrics-key-required is deprecated: /metrics needs the API key by default now "
                    "(--metrics-no-auth opens it)")
    if not cfg.api_keys and not _is_loopback(cfg.host):
        log.warning("no API key is set and the server listens on %s, beyond this machine: anyone who can reach "
                    "it can use it (--api-key or --api-key-file)", cfg.host)


def _check_port_free(host: str, port: int) -> None:
    """Exit 2 when something listens on the port already: granian's workers share their port
    (SO_REUSEPORT), so a second server would take half of the first one's connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"ggserve: cannot listen on {_url_host(host)}:{port}: {exc.strerror or exc} "
                             "(another server is using the port? --port picks another)") from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    setup_logging("debug" if args.verbose else args.log_level, "ggserve", args.log_format, args.log_file)
    cfg = config_from_args(args, argv)
    if cfg.model:
        check_header(cfg.model)
    _check_port_free(cfg.host, cfg.port)
    _warn_about(cfg, args)
    launcher = Launcher(cfg)
    signal.signal(signal.SIGINT, launcher.request_stop)
    signal.signal(signal.SIGTERM, launcher.request_stop)
    try:
        info = launcher.start()
    except StartInterrupted:
        log.info("stopped during start-up")
        launcher.shutdown()
        return 0
    except ChildFailed as exc:
        launcher.shutdown()  # first: the children's last words come before the verdict, the last line
        log.error("start-up failed: %s (the lines above say why)", exc)
        return 1
    if info is not None:
        log_engine(info)
    elif cfg.models_single:
        log.info("%s sleeps after %gs idle and loads again on the next request",
                 cfg.model_alias, cfg.sleep_idle_seconds)
    else:
        log.info("router mode: %d model(s), up to %s loaded at once%s", len(cfg.models), cfg.models_max or "all",
                 "" if cfg.models_autoload else ", loaded by POST /models/load only")
    log.info("listening on %s://%s:%d", launcher.scheme, _url_host(cfg.host), cfg.port)
    code = launcher.supervise()
    launcher.shutdown()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        try:
            from bench.cli import main as bench_main
        except ModuleNotFoundError as exc:
            raise UsageError(f"ggserve bench needs its extras ({exc.name} is missing): "
                             'pip install "ggserve[bench]"') from None
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="ggserve", description=__doc__)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    serve_command = serve_parser(sub)
    sub.add_parser("bench", help="load-test an OpenAI-compatible server (ggserve bench --help)")
    apply_env_defaults(serve_command)
    args = parser.parse_args(argv)
    return serve(args, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
