"""The ``ggserve`` command: ``serve`` starts the server, ``bench`` load-tests one.

Flag names follow llama-server's wherever the meaning is the same, so its users can switch.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ggserve.config import ServeConfig, cpu_has_amx
from ggserve.launcher import ChildFailed, Launcher, StartInterrupted
from ggserve.model import resolve_model
from ggserve.process import setup_logging

log = logging.getLogger("ggserve")


class UsageError(SystemExit):
    """A bad command line: the message, then exit code 2 (as argparse does)."""

    def __init__(self, message: str) -> None:
        print(message, file=sys.stderr)
        super().__init__(2)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a GGUF model behind the OpenAI API")
    d = ServeConfig(model="")
    m = p.add_argument_group("model")
    m.add_argument("-m", "--model", default="", help="GGUF file (default: embedded Gemma 3 270M)")
    m.add_argument("-a", "--alias", default="", help="model id shown by the API")
    m.add_argument("--chat-template-file", default="", help="jinja chat template overriding the GGUF's")
    e = p.add_argument_group("engine")
    e.add_argument("-np", "--parallel", dest="n_parallel", type=int, default=d.n_parallel, help="slots per executor")
    e.add_argument("-c", "--ctx-size", type=int, default=d.ctx_size, help="KV tokens per executor, split over its slots")
    e.add_argument("-b", "--batch-size", type=int, default=d.batch_size, help="max tokens per step")
    e.add_argument("-ub", "--ubatch-size", type=int, default=d.ubatch_size)
    e.add_argument("-t", "--threads", type=int, default=d.threads, help="0: all cores")
    e.add_argument("-tb", "--threads-batch", type=int, default=d.threads_batch)
    e.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", type=int, default=d.n_gpu_layers)
    e.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default=d.flash_attn)
    e.add_argument("-ctk", "--cache-type-k", default=d.cache_type_k)
    e.add_argument("-ctv", "--cache-type-v", default=d.cache_type_v)
    e.add_argument(
        "-nr", "--no-repack", dest="repack", action="store_false", default=None,
        help="no CPU weight repacking (default: off on AMX CPUs, whose llama.cpp path can crash)",
    )
    e.add_argument("--repack", dest="repack", action="store_true")
    e.add_argument("--executors", type=int, default=d.executors, help="data-parallel executors")
    e.add_argument("--gpus", default="", help="comma-separated CUDA device per executor")
    e.add_argument("--max-queue", type=int, default=d.max_queue, help="waiting requests before 503")
    e.add_argument(
        "--step-timeout", type=float, default=d.step_timeout,
        help="seconds one engine step may take before its executor is declared hung and restarted",
    )
    e.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false", help="never reuse cached prefixes")
    e.add_argument("-s", "--seed", type=int, default=d.seed, help="default sampling seed (-1: random)")
    e.add_argument(
        "--reasoning-format", choices=["none", "deepseek", "deepseek-legacy", "auto"], default=d.reasoning_format,
        help="where thinking text goes: reasoning_content (deepseek, auto) or content (none)",
    )
    e.add_argument(
        "--reasoning-budget", type=int, default=d.reasoning_budget,
        help="thinking tokens before the closing tag is forced (-1: no limit, 0: no thinking)",
    )
    e.add_argument("--reasoning-budget-message", default=d.reasoning_budget_message,
                   help="text forced before the closing tag when the reasoning budget is spent")
    h = p.add_argument_group("http")
    h.add_argument("--host", default=d.host)
    h.add_argument("--port", type=int, default=d.port)
    h.add_argument("--http-workers", type=int, default=d.http_workers)
    h.add_argument("--api-key", dest="api_key", action="append", default=[], help="accepted key (repeatable, or comma-separated)")
    h.add_argument("--api-key-file", default="", help="file with one API key per line")
    h.add_argument("--metrics-key-required", action="store_true", help="/metrics needs an API key too")
    h.add_argument("--ssl-keyfile", "--ssl-key-file", default="")
    h.add_argument("--ssl-certfile", "--ssl-cert-file", default="")
    h.add_argument("--max-body-size", type=int, default=d.max_body_size, help="bytes")
    h.add_argument(
        "--sse-ping-interval", type=float, default=d.sse_ping_interval,
        help="seconds without output before a stream sends an SSE ': ping' comment",
    )
    o = p.add_argument_group("operations")
    o.add_argument(
        "--shutdown-timeout", type=float, default=d.shutdown_timeout,
        help="on SIGTERM/SIGINT, seconds running requests may take to finish before they are ended",
    )
    o.add_argument(
        "--max-restarts", type=int, default=d.max_restarts,
        help="failures of one process within 2 minutes before the server gives up (exit 1)",
    )
    o.add_argument("--run-dir", default="", help="directory for sockets (default: a new temp dir)")
    o.add_argument(
        "--scheduler-endpoint", default="",
        help="where frontends reach the scheduler (default: ipc:// in the run dir; tcp://HOST:PORT "
        "is authenticated with CURVE keys made at start-up)",
    )
    o.add_argument(
        "--executor-endpoint", default="",
        help="where executors reach the scheduler (default: ipc:// in the run dir; tcp://HOST:PORT "
        "for executors on other hosts, authenticated with CURVE)",
    )
    o.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"])


def _api_keys(args: argparse.Namespace) -> list[str]:
    keys = [k.strip() for value in args.api_key for k in value.split(",") if k.strip()]
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as f:
            keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return keys


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    if args.n_parallel < 1 or args.executors < 1:
        raise UsageError("ggserve: --parallel and --executors must be at least 1")
    if args.ctx_size < args.n_parallel * 16:
        raise UsageError(f"ggserve: --ctx-size {args.ctx_size} is too small for {args.n_parallel} slots")
    if args.batch_size < args.n_parallel:
        raise UsageError("ggserve: --batch-size must be at least --parallel (one decode token per slot)")
    if args.step_timeout <= 0 or args.shutdown_timeout < 0 or args.max_restarts < 0:
        raise UsageError("ggserve: --step-timeout must be positive, --shutdown-timeout and --max-restarts not negative")
    if args.reasoning_budget < -1:
        raise UsageError("ggserve: --reasoning-budget must be -1 (no limit) or a number of tokens")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise UsageError("ggserve: --ssl-keyfile and --ssl-certfile go together")
    # Flags whose dest is a ServeConfig field map one to one; the rest are derived here.
    fields = {f: getattr(args, f) for f in ServeConfig.__struct_fields__ if hasattr(args, f)}
    fields.update(
        model=resolve_model(args.model),
        repack=not cpu_has_amx() if args.repack is None else args.repack,
        gpus=[g for g in args.gpus.split(",") if g],
        api_keys=_api_keys(args),
    )
    return ServeConfig(**fields)


def serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, "ggserve")
    cfg = config_from_args(args)
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
        log.error("start-up failed: %s", exc)
        launcher.shutdown()
        return 1
    ex = info.executors[0]
    log.info(
        "model %s (%s, %.0fM params, %.0f MiB) as '%s'",
        cfg.model, ex.model_desc, ex.n_params / 1e6, ex.model_size_bytes / 2**20, info.model_alias,
    )
    log.info(
        "%d executor(s) x %d slots, %d tokens of context per slot, batch %d, KV %.1f MiB per executor",
        info.n_executors, info.n_slots, info.n_ctx_slot, info.n_batch, ex.kv_bytes / 2**20,
    )
    log.info("listening on %s://%s:%d", launcher.scheme, cfg.host, cfg.port)
    code = launcher.supervise()
    launcher.shutdown()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        from bench.cli import main as bench_main

        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="ggserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    sub.add_parser("bench", help="load-test an OpenAI-compatible server (ggserve bench --help)")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
