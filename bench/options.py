"""Command-line options every side-by-side benchmark of bench/ shares (embeddings, multimodal,
router): which servers and model, and how a run is seeded, started, kept quiet and stored."""

from __future__ import annotations

import argparse
from pathlib import Path

SERVERS = ("ggserve", "llama-server")


def add_server_options(p: argparse.ArgumentParser) -> None:
    """--servers and -m."""
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, from: " + ", ".join(SERVERS))
    p.add_argument("-m", "--model-path", default=None, help="GGUF (default: the embedded Gemma 3 270M)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Seed, port, start-up timeout, quiet-machine wait and output folder."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--quiet-cores", type=float, default=0.1,
                   help="measure only when other processes use at most this many cores")
    p.add_argument("--quiet-timeout", type=float, default=600.0)
    p.add_argument("--output-dir", type=Path, default=Path("bench-results"))


def chosen_servers(args: argparse.Namespace) -> list[str]:
    """The servers of --servers, in order; an unknown one ends the run with a message."""
    servers = [s for s in args.servers.split(",") if s]
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown:
        raise SystemExit(f"unknown servers {unknown}; known: {list(SERVERS)}")
    return servers
