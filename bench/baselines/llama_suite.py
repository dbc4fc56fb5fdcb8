"""Run llama-server's own pytest suite against llama-server and against ggserve, and compare.

Usage: python -m bench.baselines.llama_suite [--servers llama,ggserve] [--modules test_basic,...]
                                   [--out DIR] [--timeout S] [--port P]

The suite (tools/server/tests of the llama.cpp tree vendored in the pinned llama-cpp-python
sdist) is run with DEBUG_EXTERNAL=1, so it talks to a server this script starts: one server per
test module, on the embedded model, with the flags that module's fixture sets (the alias, the
API key, --metrics, --slot-save-path, ...). Per-test settings are not honoured in that mode, so
some tests fail on both servers; many also assert the text of the suite's tiny model. What
counts is the difference: the tests llama-server passes that ggserve fails.

The suite needs its own requirements (tests/requirements.txt plus pytest-timeout) in a virtual
environment given by --suite-python (default /tmp/llsuite-venv/bin/python). Results go to
OUT/<server>.json ({test id: outcome}); the comparison is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from bench.baselines.llama_cpp_build import binary_paths, pinned_version, source_tree
from ggserve.config import cpu_has_amx
from ggserve.models.resolve import resolve_model

# ServerPreset.tinyllama2's settings, with which most modules start.
BASE_FLAGS = ["--temp", "0.8", "--seed", "42", "-c", "512", "-np", "2", "-n", "64",
              "--alias", "tinyllama-2", "--metrics", "--slots", "--props", "--jinja"]
API_KEY = "sk-this-is-the-secret-key"  # test_security.py's TEST_API_KEY

# Module -> flags replacing or adding to BASE_FLAGS, as the module's fixture configures them.
MODULES: dict[str, list[str]] = {
    "test_basic": [],
    "test_chat_completion": [],
    "test_completion": [],
    "test_compat_anthropic": ["--alias", "tinyllama-2-anthropic", "-c", "8192", "-np", "1"],
    "test_compat_oai_responses": [],
    "test_ctx_shift": ["-n", "128"],
    "test_embedding": ["--embedding", "--pooling", "last", "--alias", "bert-bge-small"],
    "test_ignore_eos": [],
    "test_infill": ["--temp", "0", "--alias", "tinyllama-infill", "-c", "2048", "-np", "1"],
    "test_metrics": [],
    "test_rerank": ["--reranking", "--alias", "jina-reranker", "-np", "1"],
    "test_security": ["--api-key", API_KEY],
    "test_slot_save": ["--temp", "0", "--slot-save-path", "{tmp}"],
    "test_stream": [],
    "test_template": ["-np", "1"],
    "test_tokenize": [],
    "test_tool_call": ["--alias", "tinyllama-2-tool-call", "-c", "8192", "-np", "1"],
}
# llama-server flags ggserve has no equivalent of, and that change nothing it serves.
GGSERVE_DROPPED = {"--jinja"}


def merge_flags(extra: list[str]) -> list[str]:
    """BASE_FLAGS with each option of `extra` overriding (or appended after) the base one."""
    options: dict[str, list[str]] = {}
    for flags in (BASE_FLAGS, extra):
        index = 0
        while index < len(flags):
            name = flags[index]
            takes_value = index + 1 < len(flags) and not flags[index + 1].startswith("--")
            options[name] = [name, flags[index + 1]] if takes_value else [name]
            index += 2 if takes_value else 1
    return [part for option in options.values() for part in option]


def server_command(server: str, flags: list[str], model: Path, port: int) -> list[str]:
    """The command line that starts `server` ("llama" or "ggserve") on `port`."""
    repack = ["--no-repack"] if cpu_has_amx() else []
    common = ["-m", str(model), "--host", "127.0.0.1", "--port", str(port), *repack]
    if server == "llama":
        return [str(binary_paths(pinned_version())["llama-server"]), *common, *flags]
    kept = [flag for flag in flags if flag not in GGSERVE_DROPPED]
    return [sys.executable, "-m", "ggserve", "serve", *common, *kept]


def wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Return once GET /health answers 200; raise if the server exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server did not become healthy")


def junit_outcomes(report: Path) -> dict[str, str]:
    """{module::test: passed|failed|error|skipped} from a pytest JUnit XML report."""
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = "failed" if tag == "failure" else tag
        outcomes[f"{module}::{case.get('name')}"] = outcome
    return outcomes


def run_module(server: str, module: str, args: argparse.Namespace, log: Path) -> dict[str, str]:
    """Start `server` for `module`, run the module's tests against it, stop it."""
    tests_dir = source_tree(pinned_version()) / "tools" / "server" / "tests"
    with tempfile.TemporaryDirectory(prefix="llsuite-") as tmp:
        flags = [flag.replace("{tmp}", tmp) for flag in merge_flags(MODULES[module])]
        command = server_command(server, flags, resolve_model(None), args.port)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        with log.open("ab") as sink:
            sink.write(f"\n== {module}: {' '.join(command)}\n".encode())
            sink.flush()
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
            try:
                wait_healthy(args.port, process)
                report = Path(tmp) / "report.xml"
                subprocess.run(
                    [args.suite_python, "-m", "pytest", f"unit/{module}.py", "-q",
                     "-p", "no:cacheprovider", "-m", "not slow", f"--timeout={args.timeout}",
                     f"--junitxml={report}"],
                    cwd=tests_dir, stdout=sink, stderr=subprocess.STDOUT, check=False,
                    env={**os.environ, "DEBUG_EXTERNAL": "1", "PORT": str(args.port)},
                )
                return junit_outcomes(report) if report.is_file() else {}
            except (RuntimeError, TimeoutError) as failure:
                sink.write(f"== {module}: {failure}\n".encode())
                return {}
            finally:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def compare(results: dict[str, dict[str, str]]) -> str:
    """Counts per server and the tests llama-server passes that ggserve does not."""
    lines = [f"{server}: {sum(o == 'passed' for o in outcomes.values())} passed "
             f"of {len(outcomes)}" for server, outcomes in results.items()]
    if {"llama", "ggserve"} <= results.keys():
        ggserve = results["ggserve"]
        regressions = sorted(test for test, outcome in results["llama"].items()
                             if outcome == "passed" and ggserve.get(test) != "passed")
        lines.append(f"passed on llama-server, not on ggserve: {len(regressions)}")
        lines += [f"  {test}: {ggserve.get(test, 'not run')}" for test in regressions]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="llama,ggserve")
    parser.add_argument("--modules", default=",".join(MODULES))
    parser.add_argument("--out", type=Path, default=Path("llama-suite-results"))
    parser.add_argument("--timeout", type=int, default=60, help="seconds per test")
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--suite-python", default="/tmp/llsuite-venv/bin/python")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, str]] = {}
    for server in args.servers.split(","):
        path = args.out / f"{server}.json"
        outcomes = json.loads(path.read_text()) if path.is_file() else {}
        for module in args.modules.split(","):
            stale = [test for test in outcomes if test.startswith(f"{module}::")]
            for test in stale:
                del outcomes[test]
            outcomes.update(run_module(server, module, args, args.out / f"{server}.log"))
            path.write_text(json.dumps(outcomes, indent=1, sort_keys=True))
            print(f"{server} {module}: done", file=sys.stderr, flush=True)
        results[server] = outcomes
    print(compare(results))


if __name__ == "__main__":
    main(sys.argv[1:])
