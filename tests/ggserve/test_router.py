"""Router mode: several models behind one server, each its own engine, loaded on demand.

The models are the embedded model under three names (symlinks), with different slot counts from
a preset. The model is a base model: the tests assert statuses, shapes and counts, never text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerHandle, start_server
from embedding_models import minilm_gguf
from test_cli import parse
from test_faults import Stream, alive, cmdline, role_pids

from ggserve.cli import config_from_args
from ggserve.flags.serve_config import UsageError
from ggserve.models.resolve import resolve_model
from ggserve.models.sources import scan_models_dir

# Not conftest's DEFAULT_ARGS: its -np would win over the preset's slot counts, as flags given on
# the command line do.
ARGS = ("-c", "512", "-t", "1", "--metrics")
PRESET = """version = 1
[*]
c = 512

[alpha]
np = 2
alias = first, primary
tags = small

[beta]
np = 1

[broken]
model = {broken}

[misset]
model = {alpha}
grammar = root ::= (
"""
LOAD_S = 60.0  # a load on a busy 2-core machine


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    for name in ("alpha", "beta", "gamma"):
        (directory / f"{name}.gguf").symlink_to(resolve_model(None))
    (directory / "broken.bin").write_bytes(b"GGUF but not really a model")
    preset = PRESET.format(broken=directory / "broken.bin", alpha=directory / "alpha.gguf")
    (directory / "preset.ini").write_text(preset)
    return directory


def router_args(models_dir: Path, *extra: str) -> tuple[str, ...]:
    return ("--models-dir", str(models_dir), "--models-preset", str(models_dir / "preset.ini"), *ARGS, *extra)


def complete(server: ServerHandle, model: str, **fields: object) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "max_tokens": 4, **fields}
    return httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=LOAD_S + 30)


def statuses(server: ServerHandle) -> dict[str, str]:
    models = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m["status"]["value"] for m in models}


def wait_status(server: ServerHandle, model: str, status: str, timeout_s: float = LOAD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while statuses(server)[model] != status:
        assert time.monotonic() < deadline, f"{model} not {status}: {statuses(server)}"
        time.sleep(0.1)


def executor_pids(server: ServerHandle, index: int) -> list[int]:
    """The executors of the model with this index (its engine lives in RUN_DIR/m<index>/)."""
    return [p for p in role_pids(server, "-m executor") if f"/m{index}/config.json" in cmdline(p)]


def wait_engine_gone(server: ServerHandle, index: int, timeout_s: float = 10.0) -> None:
    """An unloaded model's processes exit (after Shutdown, or killed after STOP_WAIT_S)."""
    deadline = time.monotonic() + timeout_s
    while executor_pids(server, index):
        assert time.monotonic() < deadline, "the unloaded model's executor still runs"
        time.sleep(0.1)


# ----------------------------------------------------------------------------- configuration


def test_models_dir_recognises_splits_and_projectors(tmp_path: Path) -> None:
    for name in ("plain.gguf", "big-00001-of-00002.gguf", "big-00002-of-00002.gguf", "mmproj-plain.gguf"):
        (tmp_path / name).touch()
    (tmp_path / "vision").mkdir()
    for name in ("vision-Q4.gguf", "mmproj-F16.gguf"):
        (tmp_path / "vision" / name).touch()
    models = {m.name: m for m in scan_models_dir(str(tmp_path))}
    assert sorted(models) == ["big", "plain", "vision"]
    assert models["big"].path.endswith("big-00001-of-00002.gguf")
    assert models["vision"].path.endswith("vision-Q4.gguf") and models["vision"].mmproj.endswith("mmproj-F16.gguf")
    assert models["plain"].mmproj == ""


def test_preset_settings_and_precedence(models_dir: Path, tmp_path: Path) -> None:
    argv = router_args(models_dir, "-np", "3")
    cfg = config_from_args(parse(*argv), argv)
    models = {m.name: m for m in cfg.models}
    assert sorted(models) == ["alpha", "beta", "broken", "gamma", "misset"] and cfg.router and cfg.model == ""
    # The command line's -np 3 wins over the sections' np; [*]'s c applies to the preset's models.
    assert "n_parallel" not in models["alpha"].overrides and cfg.n_parallel == 3
    argv = router_args(models_dir)
    cfg = config_from_args(parse(*argv), argv)
    models = {m.name: m for m in cfg.models}
    assert models["alpha"].overrides["n_parallel"] == 2 and models["beta"].overrides["n_parallel"] == 1
    assert models["gamma"].overrides == {}  # only in the directory: the command line's settings
    for argv in (("-m", str(models_dir / "alpha.gguf")), ("--models-max", "-1"),
                 ("--scheduler-endpoint", "tcp://127.0.0.1:5555")):
        with pytest.raises(UsageError):
            config_from_args(parse(*router_args(models_dir), *argv))
    for bad in ("port = 9000", "no-such-flag = 1", "no-prefix-cache = maybe"):
        preset = tmp_path / "bad.ini"
        preset.write_text(f"[alpha]\nmodel = {models_dir / 'alpha.gguf'}\n{bad}\n")
        with pytest.raises(UsageError):
            config_from_args(parse("--models-preset", str(preset)), ("--models-preset", str(preset)))


def test_an_alias_naming_another_model_or_its_alias_is_refused(models_dir: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    preset = tmp_path / "aliases.ini"
    for alpha, beta, why in (("alias = beta", "", "'beta' of model [alpha] is also the name of model [beta]"),
                             ("alias = one", "alias = two,one", "'one' of model [beta] is also an alias of model [alpha]")):
        preset.write_text(f"[alpha]\nmodel = {models_dir / 'alpha.gguf'}\n{alpha}\n"
                          f"[beta]\nmodel = {models_dir / 'beta.gguf'}\n{beta}\n")
        with pytest.raises(UsageError):
            config_from_args(parse("--models-preset", str(preset)), ("--models-preset", str(preset)))
        assert why in capsys.readouterr().err


def test_a_worker_asked_for_the_models_before_it_has_the_table_waits_for_it() -> None:
    """With several HTTP workers, one may be asked for /v1/models before the launcher's first
    table reached it: it answers with the table, not an empty list."""
    from frontend.router import ModelRouter
    from frontend.routes.server.router_models import models
    from ggserve.config import ServeConfig
    from ipc.protocol import ModelEntry, ModelStatus, ModelTable

    async def ask() -> list[str]:
        router = ModelRouter(ServeConfig(model=""))
        asked = asyncio.create_task(models(router, None))
        await asyncio.sleep(0.05)
        assert not asked.done()
        router._on_table(ModelTable([ModelEntry("alpha", "/m/alpha.gguf", ModelStatus.UNLOADED)]))
        body = json.loads((await asked).body)
        return [m["id"] for m in body["data"]]

    assert asyncio.run(ask()) == ["alpha"]


# ----------------------------------------------------------------------------- one server, many models


@pytest.fixture(scope="module")
def router(models_dir: Path) -> Iterator[ServerHandle]:
    # Two HTTP workers: each learns a model when it first needs it, whichever loaded it.
    with start_server(*router_args(models_dir, "--http-workers", "2"), base_args=()) as handle:
        yield handle


def test_models_are_listed_unloaded_with_their_settings(router: ServerHandle) -> None:
    models = {m["id"]: m for m in httpx.get(f"{router.base_url}/v1/models").json()["data"]}
    assert sorted(models) == ["alpha", "beta", "broken", "gamma", "misset"]
    assert {m["status"]["value"] for m in models.values()} == {"unloaded"}
    assert models["alpha"]["status"]["args"] == ["--ctx-size", "512", "--parallel", "2", "--alias", "first, primary",
                                                 "--tags", "small"]
    assert (models["alpha"]["aliases"], models["alpha"]["tags"]) == (["first", "primary"], ["small"])
    assert (models["beta"]["aliases"], models["beta"]["tags"]) == ([], [])
    one = httpx.get(f"{router.base_url}/v1/models/primary")  # OpenAI's retrieve, by an alias too
    assert one.status_code == 200 and one.json()["id"] == "alpha" and one.json()["status"]["value"] == "unloaded"
    assert httpx.get(f"{router.base_url}/models/delta").status_code == 404
    assert models["alpha"]["path"].endswith(".gguf")


def test_unknown_or_missing_model_is_an_openai_error(router: ServerHandle) -> None:
    resp = complete(router, "delta")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "not_found_error" and resp.json()["error"]["param"] == "model"
    resp = httpx.post(f"{router.base_url}/v1/completions", json={"prompt": "Hi"})
    assert resp.status_code == 400 and "model" in resp.json()["error"]["message"]
    assert httpx.get(f"{router.base_url}/slots").status_code == 400


def test_a_model_that_fails_to_load_ends_its_requests_with_the_reason(router: ServerHandle) -> None:
    t0 = time.monotonic()
    resp = complete(router, "broken")
    assert resp.status_code == 503 and "could not be loaded" in resp.json()["error"]["message"]
    assert time.monotonic() - t0 < 20
    (broken,) = [m for m in httpx.get(f"{router.base_url}/v1/models").json()["data"] if m["id"] == "broken"]
    assert broken["status"]["value"] == "unloaded" and broken["status"]["failed"] is True


def test_a_model_whose_settings_the_http_worker_refuses_is_a_503_and_the_listing_stands(router: ServerHandle
                                                                                          ) -> None:
    # its engine loads; its server-wide grammar does not compile where the HTTP worker checks it
    for _ in range(2):  # and again: not a 500 the first time and another error after
        resp = complete(router, "misset")
        assert resp.status_code == 503 and "cannot be served" in resp.json()["error"]["message"], resp.text
    assert httpx.get(f"{router.base_url}/v1/models", timeout=10).status_code == 200  # was a 500 for every model
    assert httpx.post(f"{router.base_url}/models/unload", json={"model": "misset"}).status_code == 200
    wait_status(router, "misset", "unloaded", 10)


def test_a_request_loads_its_model_and_is_routed_to_it(router: ServerHandle) -> None:
    for model, slots in (("alpha", 2), ("beta", 1)):
        resp = complete(router, model)
        assert resp.status_code == 200 and resp.json()["model"] == model
        assert statuses(router)[model] == "loaded"
        assert len(httpx.get(f"{router.base_url}/slots", params={"model": model}).json()) == slots
        props = httpx.get(f"{router.base_url}/props", params={"model": model}).json()
        assert props["total_slots"] == slots and props["is_sleeping"] is False
    assert statuses(router)["gamma"] == "unloaded"
    assert httpx.get(f"{router.base_url}/slots", params={"model": "gamma"}).status_code == 503  # never loads
    resp = complete(router, "primary")  # an alias routes to its model
    assert resp.status_code == 200 and resp.json()["model"] == "alpha"
    listed = {m["id"]: m for m in httpx.get(f"{router.base_url}/v1/models").json()["data"]}
    assert listed["alpha"]["architecture"]["input_modalities"] == ["text"]  # known once loaded
    assert "architecture" not in listed["gamma"]
    assert httpx.get(f"{router.base_url}/props", params={"model": "first"}).json()["total_slots"] == 2


def test_alternating_concurrent_requests_to_two_models(router: ServerHandle) -> None:
    results: list[tuple[str, int, str]] = []

    def ask(model: str) -> None:
        resp = complete(router, model, max_tokens=8)
        results.append((model, resp.status_code, resp.json().get("model", "")))

    threads = [threading.Thread(target=ask, args=("alpha" if i % 2 else "beta",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOAD_S)
    assert len(results) == 8 and all(status == 200 and got == model for model, status, got in results)


def histogram_count(text: str, name: str, model: str) -> float:
    match = re.search(rf'^ggserve:{name}_count{{model="{model}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_and_logs_are_labelled_by_model(router: ServerHandle) -> None:
    url = router.base_url
    before = httpx.get(f"{url}/metrics", timeout=10).text
    for model in ("alpha", "alpha", "beta"):
        assert complete(router, model).status_code == 200
    # Two HTTP workers: whichever answers a scrape gives every loaded model's series, also one it
    # has served no request for, and the request histograms of both workers.
    for _ in range(6):
        text = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'ggserve:slots_total{executor="0",model="alpha"} 2.0' in text
        assert 'ggserve:slots_total{executor="0",model="beta"} 1.0' in text and 'model="gamma"' not in text
        assert re.search(r'^llamacpp:n_decode_total{model="beta"} [1-9]', text, re.MULTILINE)
        for name in ("request_prompt_tokens", "e2e_request_latency_seconds", "time_to_first_token_seconds"):
            assert histogram_count(text, name, "alpha") == histogram_count(before, name, "alpha") + 2
            assert histogram_count(text, name, "beta") == histogram_count(before, name, "beta") + 1
        assert "ggserve:request_prompt_tokens_count " not in text  # no series without a model
    only = httpx.get(f"{url}/metrics", params={"model": "beta"}, timeout=10).text
    assert 'slots_total{executor="0",model="beta"}' in only and 'slots_total{executor="0",model="alpha"}' not in only
    assert "model=alpha" in router.log() and "scheduler:beta" in router.log()


def test_one_models_executor_dying_leaves_the_others_serving(router: ServerHandle) -> None:
    complete(router, "alpha")
    complete(router, "beta")
    serving = Stream(router.base_url, {"model": "beta", "prompt": "Once", "max_tokens": 40, "stream": True,
                                       "ignore_eos": True}).start()
    serving.wait_events(2)
    (victim,) = executor_pids(router, 0)  # alpha's, killed while beta streams
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    while alive(victim):
        time.sleep(0.05)
    serving.join()
    # no error event (the sampled text itself may hold the word "error")
    assert serving.status == 200 and serving.done and not any(line.startswith('data: {"error"')
                                                               for _, line in serving.events)
    assert complete(router, "beta").status_code == 200  # served while alpha's executor restarts
    deadline = t0 + LOAD_S
    while (resp := complete(router, "alpha")).status_code != 200:
        assert resp.status_code == 503 and time.monotonic() < deadline
        time.sleep(0.5)
    assert executor_pids(router, 0) != [victim] and statuses(router)["alpha"] == "loaded"


def test_load_and_unload_endpoints_and_their_status_events(router: ServerHandle) -> None:
    url = router.base_url
    events: list[dict] = []

    def listen() -> None:  # llama-server's GET /models/sse, until gamma is unloaded again
        with httpx.stream("GET", f"{url}/models/sse", timeout=LOAD_S + 30) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["model"] == "gamma" and events[-1]["data"]["status"] == "unloaded":
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.5)  # connected before the load starts
    assert httpx.post(f"{url}/models/load", json={"model": "gamma"}).json() == {"success": True}
    again = httpx.post(f"{url}/models/load", json={"model": "gamma"})  # as llama-server: a 400, loading or loaded
    assert again.status_code == 400 and "already running" in again.json()["error"]["message"]
    wait_status(router, "gamma", "loaded")
    assert httpx.post(f"{url}/models/unload", json={"model": "gamma"}).json() == {"success": True}
    assert statuses(router)["gamma"] == "unloaded"  # the answer came once the launcher had taken it
    again = httpx.post(f"{url}/models/unload", json={"model": "gamma"})
    assert again.status_code == 400 and "not running" in again.json()["error"]["message"]
    listener.join(10)
    assert not listener.is_alive()
    gamma = [e["data"]["status"] for e in events if e["model"] == "gamma"]
    assert gamma[-2:] == ["loaded", "unloaded"] and gamma[0] in ("loading", "loaded")
    assert {e["event"] for e in events} == {"status_change"}
    assert httpx.post(f"{url}/models/load", json={"model": "delta"}).status_code == 404
    # a load answered is taken: an unload right after finds the model running, and stops it
    assert httpx.post(f"{url}/models/load", json={"model": "gamma"}).json() == {"success": True}
    assert httpx.post(f"{url}/models/unload", json={"model": "gamma"}).json() == {"success": True}
    assert statuses(router)["gamma"] == "unloaded"
    for method in ("POST", "DELETE"):  # llama-server's downloads into its cache
        refused = httpx.request(method, f"{url}/models", params={"model": "org/model-GGUF"})
        assert refused.status_code == 501 and "downloads" in refused.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/completions", params={"autoload": "false"},
                      json={"model": "gamma", "prompt": "Hi"}).status_code == 503


# ----------------------------------------------------------------------------- limits and sleep


def test_models_max_unloads_the_least_recently_used(models_dir: Path) -> None:
    with start_server(*router_args(models_dir, "--models-max", "1"), base_args=()) as server:
        assert complete(server, "alpha").status_code == 200
        assert complete(server, "beta").status_code == 200
        assert statuses(server) == {"alpha": "unloaded", "beta": "loaded", "broken": "unloaded", "gamma": "unloaded",
                                    "misset": "unloaded"}
        wait_engine_gone(server, 0)  # alpha's engine is gone, its memory freed
        assert complete(server, "alpha").status_code == 200
        assert statuses(server)["beta"] == "unloaded"
        # A busy model is never unloaded: a load waits for it to finish.
        busy = Stream(server.base_url, {"model": "alpha", "prompt": "Once", "max_tokens": 40, "stream": True,
                                        "ignore_eos": True}).start()
        busy.wait_events(2)
        assert complete(server, "beta").status_code == 200
        busy.join()
        assert busy.done and statuses(server)["alpha"] == "unloaded"
        assert complete(server, "alpha").status_code == 200
        engine = role_pids(server, "-m executor") + role_pids(server, "-m scheduler")
        run_dir = Path(cmdline(engine[0]).split("--config ")[1].split()[0]).parent.parent
        server.proc.send_signal(signal.SIGTERM)  # stops every model's engine, removes the run directory
        assert server.proc.wait(30) == 0
        assert not any(alive(pid) for pid in engine) and not run_dir.exists()


def test_an_embedding_model_serves_beside_a_generating_one(tmp_path: Path) -> None:
    """Each model's kind is its own (its preset's embeddings): the router sends /v1/embeddings
    to the embedding model and chat to the generating one; a route of the other kind is a 501."""
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "chat.gguf").symlink_to(resolve_model(None))
    (directory / "minilm.gguf").symlink_to(minilm_gguf())
    (directory / "preset.ini").write_text("version = 1\n[*]\nc = 512\n\n[minilm]\nembeddings = true\nnp = 4\n")
    with start_server("--models-dir", str(directory), "--models-preset", str(directory / "preset.ini"), "-t", "1",
                      "--models-max", "1", base_args=()) as server:
        base = server.base_url
        r = httpx.post(f"{base}/v1/embeddings", json={"model": "minilm", "input": "hello"}, timeout=LOAD_S)
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384, r.text
        r = httpx.post(f"{base}/v1/chat/completions", timeout=LOAD_S,
                       json={"model": "minilm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert r.status_code == 501, r.text
        assert complete(server, "chat").status_code == 200
        r = httpx.post(f"{base}/v1/embeddings", json={"model": "chat", "input": "hello"}, timeout=LOAD_S)
        assert r.status_code == 501 and "--embeddings" in r.json()["error"]["message"], r.text


def test_models_memory_unloads_idle_models_to_fit_and_refuses_what_never_fits(models_dir: Path, tmp_path: Path) -> None:
    preset = tmp_path / "memory.ini"
    preset.write_text("[*]\nc = 512\nnp = 1\n\n[gamma]\nc = 32768\n")
    # At -c 512 a model is estimated at ~250 MiB (its 241 MiB file, 9 MiB of KV, 1 MiB of logits):
    # 400 MiB hold one at a time, never gamma with 32768 cells (576 MiB of KV alone).
    with start_server("--models-dir", str(models_dir), "--models-preset", str(preset), "-t", "1",
                      "--models-memory", "400M", "--models-max", "0", base_args=()) as server:
        assert complete(server, "alpha").status_code == 200
        assert complete(server, "beta").status_code == 200
        assert statuses(server)["alpha"] == "unloaded" and statuses(server)["beta"] == "loaded"
        assert "unloading alpha (least recently used) to make room for beta" in server.log()
        for resp in (complete(server, "gamma"), complete(server, "gamma", stream=True),
                     httpx.post(f"{server.base_url}/models/load", json={"model": "gamma"})):
            error = resp.json()["error"]
            assert resp.status_code == 400 and error["param"] == "model" and "--models-memory" in error["message"]
        assert statuses(server)["gamma"] == "unloaded"
        # A busy model is not unloaded for memory either: the load waits until it is idle.
        busy = Stream(server.base_url, {"model": "beta", "prompt": "Once", "max_tokens": 40, "stream": True,
                                        "ignore_eos": True}).start()
        busy.wait_events(2)
        assert complete(server, "alpha").status_code == 200
        busy.join()
        assert busy.done and statuses(server)["beta"] == "unloaded"
        assert "estimated 25" in server.log()  # the load logs its estimate (about 250 MiB)


def test_idle_models_sleep_and_wake_on_the_next_request(models_dir: Path) -> None:
    with start_server(*router_args(models_dir, "--sleep-idle-seconds", "2", "--sse-ping-interval", "0.3"),
                      base_args=()) as server:
        assert complete(server, "alpha").status_code == 200
        wait_status(server, "alpha", "sleeping", 15)
        props = httpx.get(f"{server.base_url}/props", params={"model": "alpha"}).json()
        assert props["is_sleeping"] is True
        wait_engine_gone(server, 0)
        body = {"model": "alpha", "prompt": "Hello", "max_tokens": 3, "stream": True}
        with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=LOAD_S) as resp:
            lines = [line for line in resp.iter_lines() if line]
        assert resp.status_code == 200 and lines[0] == ": ping"  # pinged while it loaded
        assert lines[-1] == "data: [DONE]"
        assert statuses(server)["alpha"] == "loaded"


def test_a_single_model_sleeps_too() -> None:
    with start_server("--sleep-idle-seconds", "2", "-c", "512", "-np", "2") as server:
        body = {"prompt": "Hello", "max_tokens": 3}  # no model: a single model takes any request
        assert httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=LOAD_S).status_code == 200
        assert httpx.get(f"{server.base_url}/props").json()["is_sleeping"] is False
        deadline = time.monotonic() + 15
        while not httpx.get(f"{server.base_url}/props").json()["is_sleeping"]:
            assert time.monotonic() < deadline, "the model did not fall asleep"
            time.sleep(0.2)
        resp = httpx.post(f"{server.base_url}/v1/completions", json={**body, "model": "any"}, timeout=LOAD_S)
        assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 3
        assert httpx.get(f"{server.base_url}/props").json()["is_sleeping"] is False


def test_a_model_failing_too_often_is_unloaded_and_the_server_keeps_serving(models_dir: Path) -> None:
    with start_server(*router_args(models_dir, "--max-restarts", "0"), base_args=()) as server:
        assert complete(server, "alpha").status_code == 200 and complete(server, "beta").status_code == 200
        (victim,) = executor_pids(server, 0)
        os.kill(victim, signal.SIGKILL)
        wait_status(server, "alpha", "unloaded", 15)
        (alpha,) = [m for m in httpx.get(f"{server.base_url}/v1/models").json()["data"] if m["id"] == "alpha"]
        assert alpha["status"]["failed"] is True and "failed 1 times" in alpha["status"]["message"]
        assert server.proc.poll() is None and complete(server, "beta").status_code == 200
        assert complete(server, "alpha").status_code == 200  # a new load starts afresh
