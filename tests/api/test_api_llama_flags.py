"""llama-server's flags: LLAMA_ARG_* environment variables, --api-prefix, --cors-origins, the
server-wide sampling defaults (shown in /props), --chat-template."""

from __future__ import annotations

import argparse
import http.client
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import start_server

from ggserve.cli import config_from_args
from ggserve.flags.parser import serve_parser
from ggserve.flags.env import apply_env_defaults, env_name

ORIGIN = "http://app.example"


def parse(argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve = serve_parser(parser.add_subparsers(dest="command"))
    apply_env_defaults(serve, environ)
    return parser.parse_args(["serve", *argv])


def test_every_flag_has_an_environment_variable():
    parser = argparse.ArgumentParser()
    serve = serve_parser(parser.add_subparsers())
    names = [env_name(a) for a in serve._actions if a.option_strings and a.dest != "help"]
    assert all(names) and len(set(names)) >= len(names) - 1  # --repack / --no-repack share a dest
    assert "LLAMA_ARG_CTX_SIZE" in names and "LLAMA_API_KEY" in names and "GGSERVE_MAX_QUEUE" in names


def test_environment_sets_flags_and_the_command_line_wins():
    env = {"LLAMA_ARG_CTX_SIZE": "1024", "LLAMA_ARG_TEMPERATURE": "0.2", "LLAMA_API_KEY": "k1",
           "GGSERVE_NO_PREFIX_CACHE": "1", "LLAMA_ARG_CORS_ORIGINS": "http://a.example,http://b.example"}
    args = parse(["-c", "2048"], env)
    assert args.ctx_size == 2048 and args.sampling_temperature == 0.2 and args.api_key == ["k1"]
    cfg = config_from_args(args)
    assert cfg.prefix_cache is False and cfg.sampling == {"temperature": 0.2}
    assert cfg.cors_origins == ["http://a.example", "http://b.example"]
    with pytest.raises(SystemExit):
        parse([], {"LLAMA_ARG_CTX_SIZE": "lots"})
    with pytest.raises(SystemExit):
        parse([], {"GGSERVE_NO_PREFIX_CACHE": "perhaps"})


def test_sampling_flags_become_server_defaults():
    args = parse(["--temp", "0", "--top-k", "7", "--mirostat", "2", "--samplers", "top_k;temp", "-n", "16",
                  "--dry-sequence-breaker", "\n", "--api-prefix", "llm/"], {})
    cfg = config_from_args(args)
    assert cfg.sampling == {"temperature": 0.0, "top_k": 7, "mirostat": 2, "samplers": ["top_k", "temperature"],
                            "dry_sequence_breakers": ["\n"]}
    assert cfg.n_predict == 16 and cfg.api_prefix == "/llm"
    for bad in (["--samplers", "top_k;nope"], ["--mirostat", "3"], ["-n", "0"], ["--chat-template", "nope"],
                ["--chat-template-kwargs", "[1]"]):
        with pytest.raises(SystemExit):
            config_from_args(parse(bad, {}))


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory) -> Path:
    """What --path serves: a page, a script in a folder, and a secret beside the folder."""
    root = tmp_path_factory.mktemp("static")
    (root / "site").mkdir()
    (root / "site" / "index.html").write_text("<h1>my ui</h1>")
    (root / "site" / "js").mkdir()
    (root / "site" / "js" / "app.js").write_text("console.log(1)")
    (root / "secret.txt").write_text("not served")
    (root / "site" / "leak.txt").symlink_to(root / "secret.txt")  # links out of the directory
    (root / "site" / "sub").mkdir()
    (root / "site" / "sub" / "index.html").symlink_to(root / "secret.txt")
    return root


@pytest.fixture(scope="module")
def flagged(monkeypatch_module, static_dir):
    for name, value in {"LLAMA_ARG_API_PREFIX": "/llm", "LLAMA_ARG_CORS_ORIGINS": ORIGIN,
                        "LLAMA_ARG_CORS_METHODS": "GET, PUT", "LLAMA_ARG_CORS_CREDENTIALS": "false",
                        "LLAMA_ARG_TEMPERATURE": "0", "LLAMA_ARG_TOP_K": "7", "LLAMA_ARG_N_PREDICT": "3",
                        "LLAMA_ARG_CHAT_TEMPLATE": "chatml", "LLAMA_ARG_STATIC_PATH": str(static_dir / "site"),
                        "GGSERVE_LOG_PROMPTS_DIR": str(static_dir / "prompts")}.items():
        monkeypatch_module.setenv(name, value)
    with start_server(ready=False) as handle:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{handle.base_url}/llm/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield handle


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_env_flags_reach_the_server(flagged):
    url = f"{flagged.base_url}/llm"
    assert httpx.get(f"{flagged.base_url}/health").status_code == 404  # only under the prefix
    params = httpx.get(f"{url}/props").json()["default_generation_settings"]["params"]
    assert params["temperature"] == 0 and params["top_k"] == 7 and params["n_predict"] == 3
    out = httpx.post(f"{url}/completion", json={"prompt": "One, two,", "ignore_eos": True}, timeout=60).json()
    assert out["tokens_predicted"] == 3 and out["generation_settings"]["top_k"] == 7  # -n and --top-k
    again = httpx.post(f"{url}/completion", json={"prompt": "One, two,", "ignore_eos": True}, timeout=60).json()
    assert again["content"] == out["content"]  # --temp 0: greedy
    prompt = httpx.post(f"{url}/apply-template", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert prompt["prompt"].startswith("<|im_start|>user")  # --chat-template chatml


def test_log_prompts_dir_gets_each_generations_prompt_as_the_model_reads_it(flagged, static_dir):
    directory = static_dir / "prompts"  # made by the server
    before = set(directory.iterdir())
    url = f"{flagged.base_url}/llm"
    chat = {"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 1}
    assert httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60).status_code == 200
    assert httpx.post(f"{url}/v1/completions", json={"prompt": ["One", "Two"], "max_tokens": 1, "n": 2},
                      timeout=60).status_code == 200
    written = sorted(path.read_text() for path in set(directory.iterdir()) - before)
    assert len(written) == 2  # a file per call
    rendered, listed = written  # "<bos>..." sorts before "[..."
    assert "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n" in rendered  # the chat template's text
    assert [text.removeprefix("<bos>") for text in json.loads(listed)] == ["One", "Two"]  # each prompt once


def test_cors_with_a_list_of_origins(flagged):
    url = f"{flagged.base_url}/llm/v1/chat/completions"
    ok = httpx.options(url, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                     "access-control-request-headers": "authorization, content-type"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN and ok.headers["vary"] == "Origin"
    assert ok.headers["access-control-allow-methods"] == "GET, PUT" and ok.headers["access-control-allow-headers"] == "*"
    assert ok.headers["access-control-allow-credentials"] == "false"
    other = httpx.options(url, headers={"origin": "http://evil.example", "access-control-request-method": "POST"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_path_serves_its_files_in_place_of_the_web_ui(flagged):
    """llama-server's --path (here LLAMA_ARG_STATIC_PATH, under --api-prefix): a directory's files
    at /, index.html for a folder, the API's routes first; nothing outside the directory."""
    url = f"{flagged.base_url}/llm"
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.text == "<h1>my ui</h1>"
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    script = httpx.get(f"{url}/js/app.js")
    assert script.text == "console.log(1)" and script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # a route wins over a file
    for missing in ("/webui/app.js", "/nope.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/js/../../secret.txt",
                    "/leak.txt", "/sub/", "/sub", "/a%00b", "/%00", "/" + "a" * 300):
        conn = http.client.HTTPConnection("127.0.0.1", flagged.port, timeout=30)
        conn.request("GET", f"/llm{missing}")  # as sent: clients would remove the dot segments
        answer = conn.getresponse()
        assert answer.status == 404 and b"not served" not in answer.read(), missing
        conn.close()
    assert httpx.post(f"{url}/js/app.js").status_code == 405


def test_path_must_be_a_directory(tmp_path):
    with pytest.raises(SystemExit):
        config_from_args(parse(["--path", str(tmp_path / "missing")], {}))
    assert config_from_args(parse(["--path", str(tmp_path)], {})).static_path == str(tmp_path)

