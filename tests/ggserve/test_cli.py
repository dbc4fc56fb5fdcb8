"""`ggserve serve` flags: llama-server's names map onto ServeConfig; bad combinations exit early."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import socket
import subprocess

import pytest
from frontend_support import gemma_path

from ggserve.cli import _warn_about, config_from_args, main
from ggserve.flags.parser import EMBEDDING_SEQUENCES, serve_parser
from ggserve.flags.serve_config import UsageError
from ggserve.config import RopeSettings
from ggserve.flags import completion, llama_server


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_llama_server_flags_map_onto_the_config(tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# comment\nfile-key\n")
    cfg = config_from_args(parse(
        "-np", "3", "-c", "3072", "-b", "256", "-t", "2", "-ngl", "0", "-fa", "off",
        "-ctk", "q8_0", "--gpus", "0,1", "--executors", "2", "--no-prefix-cache",
        "--api-key", "a,b", "--api-key", "c", "--api-key-file", str(keys),
        "--sse-ping-interval", "2.5", "--no-repack", "-a", "my-model",
        "--reasoning-format", "none", "--reasoning-budget", "64", "--reasoning-budget-message", "Enough.",
    ))  # fmt: skip
    assert (cfg.n_parallel, cfg.ctx_size, cfg.batch_size, cfg.threads) == (3, 3072, 256, 2)
    assert (cfg.n_gpu_layers, cfg.flash_attn, cfg.cache_type_k) == (0, "off", "q8_0")
    assert cfg.gpus == ["0", "1"] and cfg.executors == 2
    assert cfg.prefix_cache is False and cfg.repack is False
    assert cfg.api_keys == ["a", "b", "c", "file-key"]
    assert cfg.sse_ping_interval == 2.5
    assert cfg.model_alias == "my-model"
    assert cfg.ctx_per_request == 0  # a request may hold the whole -c
    assert (cfg.reasoning_format, cfg.reasoning_budget, cfg.reasoning_budget_message) == ("none", 64, "Enough.")
    assert cfg.model.endswith(".gguf")  # the embedded default, assembled once


def test_aliases_and_tags_are_comma_separated_sets_as_in_llama_server() -> None:
    cfg = config_from_args(parse("-a", "zeta, alpha,,zeta", "--tags", "small,base"))
    assert cfg.aliases == ["alpha", "zeta"] and cfg.tags == ["base", "small"]
    assert cfg.model_alias == "alpha"  # llama-server's id: the first alias of its sorted set
    assert config_from_args(parse()).aliases == [] and config_from_args(parse()).model_alias.endswith(".gguf")


def test_embedding_flags_map_onto_the_config() -> None:
    plain = config_from_args(parse())
    assert (plain.embeddings, plain.pooling, plain.n_parallel, plain.embd_max_inputs) == (False, "", 4, 2048)
    cfg = config_from_args(parse("--embeddings", "--pooling", "cls", "--embd-max-inputs", "10"))
    assert (cfg.embeddings, cfg.pooling, cfg.embd_max_inputs) == (True, "cls", 10)
    assert cfg.n_parallel == EMBEDDING_SEQUENCES  # many short inputs per decode unless -np says
    rerank = config_from_args(parse("--rerank", "-np", "8"))
    assert (rerank.embeddings, rerank.pooling, rerank.n_parallel) == (True, "rank", 8)


@pytest.mark.parametrize(
    "argv",
    [
        ("-np", "0"),
        ("--http-workers", "0"),
        ("--pooling", "mean"),
        ("--reranking", "--pooling", "mean"),
        ("--embeddings", "--embd-max-inputs", "0"),
        ("-np", "8", "-b", "4"),
        ("-np", "64", "-c", "512"),
        ("--ssl-keyfile", "key.pem"),
        ("-m", "/nonexistent/model.gguf"),
        ("--reasoning-budget", "-2"),
        ("-md", "/nonexistent/draft.gguf"),
        ("--spec-type", "draft-simple"),
        ("--spec-type", "ngram", "--spec-ngram-size-n", "0"),
        ("--spec-type", "ngram", "--draft-max", "-1"),
        ("--mmproj", "/nonexistent/mmproj.gguf"),
        ("--mmproj", __file__, "--embeddings"),
        ("--media-max-bytes", "0"),
        ("--video-fps", "0"),
        ("--video-max-frames", "0"),
        ("--video-decode-timeout", "0"),
        ("--video-ffmpeg-dir", "/nonexistent/bin"),
        ("--port", "0"),
        ("--api-key-file", "/nonexistent/keys.txt"),
        ("--ssl-keyfile", "/nonexistent/key.pem", "--ssl-certfile", "/nonexistent/cert.pem"),
        ("--chat-template-file", "/nonexistent/template.jinja"),
        ("--host", "no-such-host.invalid"),
    ],
)
def test_bad_flag_combinations_exit_with_a_message(argv: tuple[str, ...], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*argv))
    assert exc.value.code == 2  # as argparse's own usage errors
    assert "ggserve:" in capsys.readouterr().err


def test_a_model_path_that_is_a_directory_or_not_gguf_says_so(tmp_path, capsys) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    for path, message in ((tmp_path, "is a directory, not a model file"), (text, "is not a GGUF file")):
        with pytest.raises(SystemExit) as exc:
            config_from_args(parse("-m", str(path)))
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_model_file_cut_short_is_a_usage_error_before_anything_starts(tmp_path, capsys) -> None:
    with open(gemma_path(), "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.gguf"  # an interrupted download, in the vocabulary or in the weights
    for size, message in ((1 << 20, "truncated GGUF header"), (len(data) * 9 // 10, "before its tensors' data")):
        cut.write_bytes(data[:size])
        with pytest.raises(SystemExit) as exc:
            main(["serve", "-m", str(cut)])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_host_name_listens_on_its_address() -> None:
    assert config_from_args(parse("--host", "localhost")).host in ("127.0.0.1", "::1")


def test_a_port_another_server_listens_on_is_a_usage_error(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exc:
            main(["serve", "--port", str(port)])
    assert exc.value.code == 2 and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_multimodal_flags_map_onto_the_config() -> None:
    plain = config_from_args(parse())
    assert (plain.mmproj, plain.mmproj_offload, plain.allow_remote_media) == ("", True, False)
    cfg = config_from_args(parse("--mmproj", __file__, "--no-mmproj-offload", "--media-max-bytes", "1000",
                                 "--allow-remote-media", "--media-fetch-timeout", "2.5"))
    assert cfg.mmproj == os.path.abspath(__file__) and not cfg.mmproj_offload
    assert not config_from_args(parse("--mmproj", __file__, "-mmdev", "none")).mmproj_offload  # llama-server's form
    with pytest.raises(UsageError):
        config_from_args(parse("-mmdev", "NoSuchDevice0"))
    assert (cfg.media_max_bytes, cfg.allow_remote_media, cfg.media_fetch_timeout) == (1000, True, 2.5)
    video = config_from_args(parse("--video-fps", "2", "--video-timestamp-interval", "0", "--video-ffmpeg-dir", ".",
                                   "--video-max-frames", "16", "--video-decode-timeout", "5"))
    assert (video.video_fps, video.video_timestamp_interval, video.video_ffmpeg_dir) == (2.0, 0, os.path.abspath("."))
    assert (video.video_max_frames, video.video_decode_timeout) == (16, 5.0)


def test_reliability_flags_map_onto_the_config() -> None:
    cfg = config_from_args(parse(
        "--step-timeout", "12.5", "--shutdown-timeout", "3", "--max-restarts", "2",
        "--scheduler-endpoint", "tcp://127.0.0.1:5555", "--executor-endpoint", "tcp://0.0.0.0:5556",
    ))  # fmt: skip
    assert (cfg.step_timeout, cfg.shutdown_timeout, cfg.max_restarts) == (12.5, 3.0, 2)
    assert (cfg.scheduler_endpoint, cfg.executor_endpoint) == ("tcp://127.0.0.1:5555", "tcp://0.0.0.0:5556")


def test_operations_flags_map_onto_the_config(tmp_path) -> None:
    cfg = config_from_args(parse(
        "--metrics", "--metrics-no-auth", "--no-slots", "--props", "--no-webui", "--verbose",
        "--log-format", "json", "--log-file", str(tmp_path / "log"),
    ))  # fmt: skip
    assert (cfg.metrics, cfg.metrics_no_auth, cfg.slots, cfg.props, cfg.webui) == (True, True, False, True, False)
    assert (cfg.log_level, cfg.log_format, cfg.log_file) == ("debug", "json", str(tmp_path / "log"))
    default = config_from_args(parse())
    assert (default.metrics, default.metrics_no_auth, default.slots, default.props, default.webui) == (
        False, False, True, False, True)  # as llama-server: metrics off, slots and the web UI on


@pytest.mark.parametrize(("argv", "warned"), [
    (("--host", "0.0.0.0"), True),
    (("--host", "::"), True),
    (("--host", "127.0.0.1"), False),
    (("--host", "localhost"), False),
    (("--host", "::1"), False),
    (("--host", "0.0.0.0", "--api-key", "k"), False),
])
def test_no_api_key_beyond_localhost_is_warned_about(argv: tuple[str, ...], warned: bool, caplog) -> None:
    args = parse(*argv)
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        _warn_about(config_from_args(args), args)
    assert ("no API key is set" in caplog.text) == warned


def test_metrics_key_required_is_still_accepted_and_deprecated(caplog) -> None:
    args = parse("--metrics-key-required")
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        _warn_about(config_from_args(args), args)
    assert "deprecated" in caplog.text and not config_from_args(args).metrics_no_auth


def test_context_shift_flags_map_onto_the_config() -> None:
    from ggserve.flags.env import apply_env_defaults

    default = config_from_args(parse())
    assert (default.context_shift, default.n_keep, default.cache_reuse) == (False, 0, 0)  # llama-server's
    cfg = config_from_args(parse("--context-shift", "--keep", "-1", "--cache-reuse", "256"))
    assert (cfg.context_shift, cfg.n_keep, cfg.cache_reuse) == (True, -1, 256)
    assert not config_from_args(parse("--context-shift", "--no-context-shift")).context_shift
    parser = argparse.ArgumentParser()
    serve = serve_parser(parser.add_subparsers())
    apply_env_defaults(serve, {"LLAMA_ARG_CONTEXT_SHIFT": "1", "LLAMA_ARG_CACHE_REUSE": "64"})
    cfg = config_from_args(parser.parse_args(["serve"]))
    assert (cfg.context_shift, cfg.cache_reuse) == (True, 64)
    for bad in (("--keep", "-2"), ("--cache-reuse", "-1")):
        with pytest.raises(SystemExit):
            config_from_args(parse(*bad))


def test_backend_sampling_is_llama_servers_flag() -> None:
    from ggserve.flags.env import apply_env_defaults

    assert not config_from_args(parse()).backend_sampling  # llama-server's default
    assert config_from_args(parse("-bs")).backend_sampling
    assert config_from_args(parse("--backend-sampling")).backend_sampling
    parser = argparse.ArgumentParser()
    serve = serve_parser(parser.add_subparsers())
    apply_env_defaults(serve, {"LLAMA_ARG_BACKEND_SAMPLING": "1"})
    assert config_from_args(parser.parse_args(["serve"])).backend_sampling


def test_slot_save_path_is_an_existing_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slots").mkdir()
    assert config_from_args(parse("--slot-save-path", "slots")).slot_save_path == str(tmp_path / "slots")
    assert config_from_args(parse()).slot_save_path == ""
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse("--slot-save-path", "missing"))
    assert exc.value.code == 2


def test_timeout_is_llama_servers_flag() -> None:
    assert config_from_args(parse("-to", "5")).timeout == 5.0
    assert config_from_args(parse()).timeout == 600.0
    with pytest.raises(SystemExit):
        config_from_args(parse("--timeout", "0"))


def test_speculative_flags_map_onto_the_config() -> None:
    default = config_from_args(parse())
    assert default.spec_type == ""  # off, as llama-server
    cfg = config_from_args(parse("--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "8",
                                 "--spec-ngram-simple-size-m", "32", "--draft-max", "16", "--draft-min", "2"))
    assert (cfg.spec_type, cfg.spec_ngram_size_n, cfg.spec_ngram_size_m) == ("ngram-simple", 8, 32)
    assert (cfg.spec_draft_n_max, cfg.spec_draft_n_min) == (16, 2)
    assert config_from_args(parse("--spec-type", "ngram-mod", "--spec-ngram-mod-n-match", "24")).spec_ngram_size_n == 24
    assert config_from_args(parse("--spec-type", "none")).spec_type == ""


def test_cpu_placement_flags_map_onto_the_config() -> None:
    plain = config_from_args(parse())
    assert not plain.cpu.custom and not plain.cpu_batch.custom  # llama.cpp's own pools, as before
    n = os.cpu_count() or 1
    cfg = config_from_args(parse("-C", "0x1", "-Cr", f"{n - 1}-", "--cpu-strict", "1", "--prio", "-1",
                                 "--poll", "0", "--prio-batch", "0"))
    assert (cfg.cpu.cpus, cfg.cpu.strict, cfg.cpu.prio, cfg.cpu.poll) == (sorted({0, n - 1}), True, -1, 0)
    # each -batch flag left out takes its one-token counterpart's value
    assert (cfg.cpu_batch.cpus, cfg.cpu_batch.strict, cfg.cpu_batch.prio, cfg.cpu_batch.poll) == (
        sorted({0, n - 1}), True, 0, 0)
    split = config_from_args(parse("-Cr", "-0", "-Crb", f"0-{n - 1}", "--cpu-strict-batch", "1"))
    assert (split.cpu.cpus, split.cpu.strict) == ([0], False)
    assert (split.cpu_batch.cpus, split.cpu_batch.strict) == (list(range(n)), True)


def test_draft_placement_flags_default_to_the_targets() -> None:
    n = os.cpu_count() or 1
    inherited = config_from_args(parse("-C", "0x1", "--prio", "-1", "--cpu-strict-batch", "1"))
    assert inherited.spec_draft_cpu == inherited.cpu  # -Cd, --prio-draft, ...: the target's
    assert inherited.spec_draft_cpu_batch == inherited.cpu  # -Cbd, ...: the draft's one-token flags'
    cfg = config_from_args(parse("-C", "0x1", "-Cd", f"{1 << (n - 1):x}", "--prio-draft", "0",
                                 "--spec-draft-cpu-range-batch", "0-", "--poll-batch-draft", "10"))
    assert (cfg.cpu.cpus, cfg.spec_draft_cpu.cpus, cfg.spec_draft_cpu.prio) == ([0], [n - 1], 0)
    assert (cfg.spec_draft_cpu_batch.cpus, cfg.spec_draft_cpu_batch.poll) == (list(range(n)), 10)
    assert not config_from_args(parse()).spec_draft_cpu.custom


def test_draft_tensor_overrides_are_the_drafts_own() -> None:
    cfg = config_from_args(parse("-otd", r"token_embd\.weight=CPU", "-cmoed", "-ncmoed", "1", "-ot", "x=CPU"))
    assert [o.pattern for o in cfg.spec_draft_tensor_overrides] == [
        r"token_embd\.weight", llama_server.MOE_EXPERTS, rf"blk\.0{llama_server.MOE_EXPERTS}"]
    assert [o.pattern for o in cfg.tensor_overrides] == ["x"]


@pytest.mark.parametrize("argv, message", [
    (("--prio-draft", "4"), "--spec-draft-prio is one of"),
    (("--poll-batch-draft", "101"), "--spec-draft-poll-batch is in [0, 100]"),
    (("-Crd", "x"), "is not [lo]-[hi]"),
    (("-C", "0xzz"), "not hexadecimal"),
    (("-C", "0"), "names no CPU"),
    (("-C", f"{1 << (os.cpu_count() or 1):x}"), "this machine has CPUs"),
    (("-Cr", "3"), "is not [lo]-[hi]"),
    (("-Crb", "2-1"), "is not [lo]-[hi]"),
    (("--poll", "101"), "--poll is in [0, 100]"),
    (("--poll-batch", "-1"), "--poll-batch is in [0, 100]"),
    (("--prio", "4"), "--prio is one of"),
    (("--cpu-strict", "2"), "--cpu-strict is 0 or 1"),
])
def test_bad_cpu_placement_exits_with_a_message_naming_it(argv: tuple[str, ...], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*argv))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_llama_cpp_context_flags_map_onto_the_config() -> None:
    plain = config_from_args(parse())
    assert (plain.kv_offload, plain.op_offload, plain.check_tensors, plain.numa, plain.warmup) == (
        True, True, False, "", True)
    assert plain.rope == RopeSettings()  # the GGUF's values
    cfg = config_from_args(parse("-nkvo", "--no-op-offload", "--check-tensors", "--numa", "isolate", "--no-warmup",
                                 "--rope-scaling", "yarn", "--rope-scale", "4", "--rope-freq-base", "20000",
                                 "--yarn-orig-ctx", "2048", "--yarn-ext-factor", "0.5", "--yarn-attn-factor", "1.1",
                                 "--yarn-beta-slow", "2", "--yarn-beta-fast", "16"))
    assert (cfg.kv_offload, cfg.op_offload, cfg.check_tensors, cfg.numa, cfg.warmup) == (
        False, False, True, "isolate", False)
    assert cfg.rope == RopeSettings(scaling="yarn", freq_base=20000.0, freq_scale=0.25, yarn_orig_ctx=2048,
                                    yarn_ext_factor=0.5, yarn_attn_factor=1.1, yarn_beta_slow=2.0,
                                    yarn_beta_fast=16.0)
    assert config_from_args(parse("--rope-freq-scale", "0.5")).rope.freq_scale == 0.5


def test_flags_for_what_ggserve_always_does_are_accepted() -> None:
    cfg = config_from_args(parse("--jinja", "-cb", "--cont-batching", "-kvu", "--kv-unified", "--cache-prompt",
                                 "--ui"))
    assert cfg.prefix_cache and cfg.webui
    aliases = config_from_args(parse("--no-cache-prompt", "--no-ui"))
    assert not aliases.prefix_cache and not aliases.webui
    config_from_args(parse("-fit", "off", "-no-ag", "--no-agent", "--no-ui-mcp-proxy", "--no-webui-mcp-proxy"))


@pytest.mark.parametrize("argv, message", [
    (("--no-jinja",), "renders chat templates with Jinja always"),
    (("-nocb",), "always batches continuously"),
    (("-no-kvu",), "one KV pool"),
    (("-hf", "ggml-org/gemma-3-270m-GGUF"), "does not download models"),
    (("--model-url", "https://example.com/m.gguf"), "does not download models"),
    (("--rope-scale", "0"), "--rope-scale must be positive"),
    (("--rpc", "host:50052"), "--rpc: ggserve runs its executors on this machine's devices"),
    (("--reuse-port",), "--reuse-port: granian cannot share its port"),
    (("--tools", "all"), "--tools: ggserve has no built-in tools"),
    (("-ag",), "--agent: ggserve has no built-in tools"),
    (("--mcp-servers-json", "{}"), "--mcp-servers-json: ggserve's chat page has no MCP client"),
    (("--ui-mcp-proxy",), "--ui-mcp-proxy: ggserve's chat page has no MCP proxy"),
    (("-lcs", "cache.bin"), "--lookup-cache-static: ggserve has no ngram-cache drafting"),
    (("--spec-synth-len", "3"), "--spec-synth-len: synthetic draft acceptance"),
    (("--spec-draft-hf", "org/draft-GGUF"), "does not download models"),
])
def test_llama_server_flags_ggserve_cannot_honour_exit_with_the_reason(argv: tuple[str, ...], message: str,
                                                                      capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*argv))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_tuning_flags_without_a_counterpart_are_accepted_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        config_from_args(parse("--threads-http", "8", "-dt", "0.1", "-sps", "0.5", "-fit", "on", "-fitt", "512,1024",
                               "-fitc", "8192", "--draft-p-split", "0.2", "-hft", "hf_x", "--spec-draft-backend-sampling"))
    for flag in ("--threads-http", "--defrag-thold", "--slot-prompt-similarity", "--fit on", "--fit-target",
                 "--fit-ctx", "--spec-draft-p-split", "--hf-token", "--spec-draft-backend-sampling"):
        assert f"{flag} is accepted without effect" in caplog.text


def test_completion_bash_completes_subcommands_flags_choices_and_paths(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--completion-bash"])
    assert exc.value.code == 0
    script = tmp_path / "ggserve.bash"
    script.write_text(capsys.readouterr().out)
    (tmp_path / "model.gguf").touch()
    (tmp_path / "models").mkdir()

    def complete(*words: str) -> list[str]:
        call = f"source {script}; COMP_WORDS=(ggserve {' '.join(words)}); COMP_CWORD={len(words)}; _ggserve; " \
               'printf "%s\\n" "${COMPREPLY[@]}"'
        out = subprocess.run(["bash", "-c", call], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        return out.split()

    assert complete("se") == ["serve"]
    assert complete("serve", "--ctx-s") == ["--ctx-size"]
    assert complete("serve", "-fa", "o") == ["on", "off"]
    assert complete("serve", "-m", "mod") == ["model.gguf", "models"]  # a file: any path
    assert complete("serve", "--models-dir", "mod") == ["models"]  # a directory: directories only
    serve = {a.dest for a in serve_parser(argparse.ArgumentParser().add_subparsers())._actions}
    assert completion.FILE_DESTS | completion.DIR_DESTS <= serve  # no flag renamed away


def test_spec_default_is_llama_servers_ngram_mod_set_up_and_flags_beside_it_win() -> None:
    cfg = config_from_args(parse("--spec-default"))
    assert (cfg.spec_type, cfg.spec_ngram_size_n, cfg.spec_draft_n_min, cfg.spec_ngram_size_m) == ("ngram-mod", 24, 48, 64)
    mine = config_from_args(parse("--spec-default", "--spec-ngram-mod-n-max", "32", "--spec-type", "ngram"))
    assert (mine.spec_type, mine.spec_ngram_size_n, mine.spec_ngram_size_m) == ("ngram", 24, 32)
    assert config_from_args(parse()).spec_type == ""


def test_version_prints_ggserve_and_llama_cpp_python_versions(capsys) -> None:
    for argv in (["--version"], ["serve", "--version"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("ggserve ") and "llama-cpp-python 0.3.36" in out


def test_a_checkout_run_without_installing_starts_and_says_its_version_is_unknown(monkeypatch, capsys) -> None:
    # the GPU machines run ggserve from PYTHONPATH: no package metadata, and the parser must still build
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("ggserve unknown (not installed) (llama-cpp-python unknown")


def test_tensor_override_flags_add_to_one_list_in_command_line_order() -> None:
    cfg = config_from_args(parse("-ot", r"blk\.1\.=CUDA0,output=CPU", "--cpu-moe", "-ncmoe", "2", "-ncffn", "1"))
    assert [(o.pattern, o.buffer_type) for o in cfg.tensor_overrides] == [
        (r"blk\.1\.", "CUDA0"), ("output", "CPU"),
        (r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),
        (r"blk\.0\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),
        (r"blk\.1\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),
        (r"blk\.0\.ffn_(up|down|gate)\.", "CPU"),
    ]
    assert config_from_args(parse()).tensor_overrides == []
    for bad in (("-ot", "no-equals"), ("-ot", "=CPU"), ("-ncmoe", "-1")):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_override_kv_takes_typed_metadata_values() -> None:
    cfg = config_from_args(parse("--override-kv", "a.n=int:3,a.f=float:0.5",
                                 "--override-kv", "a.b=bool:false,a.s=str:x y"))
    assert [(o.key, o.type, o.value) for o in cfg.kv_overrides] == [
        ("a.n", "int", 3), ("a.f", "float", 0.5), ("a.b", "bool", False), ("a.s", "str", "x y")]
    for bad in ("a.n", "a.n=int", "a.n=int:x", "a.b=bool:yes", "a.x=blob:1", "a.s=str:" + "x" * 128):
        with pytest.raises(SystemExit):
            parse("--override-kv", bad)


@pytest.mark.parametrize("argv, level, fmt", [
    ((), "info", "text"),
    (("-lv", "0"), "critical", "text"),
    (("--verbosity", "2"), "warning", "text"),
    (("--log-verbosity", "9"), "debug", "text"),
    (("--log-disable",), "critical", "text"),
    (("--log-jsonl",), "info", "json"),
    (("--log-level", "critical"), "critical", "text"),
])
def test_llama_server_log_flags_set_the_level_and_format(argv: tuple[str, ...], level: str, fmt: str) -> None:
    cfg = config_from_args(parse(*argv))
    assert (cfg.log_level, cfg.log_format) == (level, fmt)


def test_log_flags_ggserve_cannot_honour_are_accepted_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        config_from_args(parse("--no-log-prefix", "--no-log-timestamps", "--log-colors", "--offline"))
    assert "--no-log-prefix is accepted without effect" in caplog.text
    assert "--no-log-timestamps is accepted without effect" in caplog.text
    assert "--log-colors on is accepted without effect" in caplog.text
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        caplog.clear()
        config_from_args(parse("--log-prefix", "--log-timestamps", "--log-colors", "off"))
    assert caplog.text == ""


def test_reasoning_flags_become_chat_template_defaults_under_the_explicit_kwargs() -> None:
    keep = {"preserve_reasoning": True}  # llama-server passes it to every template
    assert config_from_args(parse()).chat_template_kwargs == keep  # auto: the template decides the rest
    assert config_from_args(parse("-rea", "off")).chat_template_kwargs == {**keep, "enable_thinking": False}
    assert config_from_args(parse("--reasoning", "--reasoning-effort", "high")).chat_template_kwargs == {
        **keep, "enable_thinking": True, "reasoning_effort": "high"}
    explicit = config_from_args(parse("--reasoning", "off", "--chat-template-kwargs", '{"enable_thinking": true}'))
    assert explicit.chat_template_kwargs == {**keep, "enable_thinking": True}
    assert config_from_args(parse("--no-reasoning-preserve")).chat_template_kwargs == {"preserve_reasoning": False}


def test_llama_server_output_defaults_map_onto_the_config(tmp_path) -> None:
    cfg = config_from_args(parse("--ignore-eos", "-l", "15043+1", "--logit-bias", "2-inf", "--grammar", 'root ::= "a"'))
    assert (cfg.ignore_eos, cfg.logit_bias, cfg.grammar, cfg.json_schema) == (True, ["15043+1", "2-inf"],
                                                                              'root ::= "a"', "")
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object"}')
    cfg = config_from_args(parse("-jf", str(schema)))
    assert (cfg.ignore_eos, cfg.logit_bias, cfg.grammar, cfg.json_schema) == (False, [], "", '{"type": "object"}')
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= [0-9]+\n')
    assert config_from_args(parse("--grammar-file", str(grammar))).grammar == 'root ::= [0-9]+\n'


@pytest.mark.parametrize(("argv", "message"), [
    (["-l", "15043"], "is not TOKEN_ID(+/-)BIAS"),
    (["-l", "x+1"], "is not TOKEN_ID(+/-)BIAS"),
    (["-l", "5+nan"], "is not TOKEN_ID(+/-)BIAS"),
    (["--grammar", 'root ::= "a"', "-j", "{}"], "--grammar and --json-schema cannot be used together"),
    (["-j", "{not json"], "--json-schema: not JSON"),
    (["-j", "[1]"], "a JSON schema is an object"),
    (["--grammar", " "], "the grammar is empty"),
    (["--grammar-file", "/no/such/file"], "--grammar-file /no/such/file"),
])
def test_bad_output_defaults_are_usage_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*argv))
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_list_devices_prints_llama_cpp_s_devices_and_exits(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--list-devices"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Available devices:" and len(out) >= 2  # "(none)" without a GPU


def test_device_none_and_no_host_map_onto_the_config_and_device_names_are_usage_errors(capsys) -> None:
    cfg = config_from_args(parse("-dev", "none", "--no-host"))
    assert (cfg.cpu_only, cfg.host_buffer) == (True, False)
    assert (config_from_args(parse()).cpu_only, config_from_args(parse()).host_buffer) == (False, True)
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse("-dev", "NOPE0"))
    assert exc.value.code == 2 and "-dev: invalid device NOPE0" in capsys.readouterr().err


def test_llama_server_context_embedding_and_infill_flags_map_onto_the_config(caplog) -> None:
    cfg = config_from_args(parse("-np", "4", "--kv-unified-per-slot", "1024", "--embd-normalize", "1", "--spm-infill"))
    assert (cfg.ctx_size, cfg.ctx_per_request, cfg.embd_normalize, cfg.spm_infill) == (4096, 1024, 1, True)
    assert config_from_args(parse("-np", "2", "--kv-unified-per-slot", "300")).ctx_size == 600  # -np x N without -c
    assert config_from_args(parse("-c", "8192", "--kv-unified-per-slot", "300")).ctx_size == 8192
    plain = config_from_args(parse())
    assert (plain.ctx_size, plain.ctx_per_request, plain.embd_normalize, plain.spm_infill) == (4096, 0, 2, False)
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        config_from_args(parse("--swa-full", "--perf", "--no-perf"))
    assert "--swa-full is accepted without effect" in caplog.text and "--perf is accepted without effect" in caplog.text
    assert "--no-perf" not in caplog.text


def test_vllm_serve_flags_name_the_same_settings(tmp_path) -> None:
    """vllm serve MODEL --served-model-name --max-num-seqs --max-model-len --max-num-batched-tokens."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    cfg = config_from_args(parse(str(model), "--served-model-name", "mine", "--max-num-seqs", "8",
                                 "--max-model-len", "2048", "--max-num-batched-tokens", "1024"))
    assert (cfg.model, cfg.aliases, cfg.n_parallel, cfg.ctx_per_request, cfg.batch_size) == (
        str(model.resolve()), ["mine"], 8, 2048, 1024)
    assert cfg.ctx_size == 4096  # the default pool holds it
    assert config_from_args(parse("--max-model-len", "16384")).ctx_size == 16384  # without -c, a pool that holds it


@pytest.mark.parametrize(("argv", "message"), [
    (["m.gguf", "-m", "n.gguf"], "give the model once"),
    (["--kv-unified-per-slot", "0"], "--kv-unified-per-slot must be at least 1"),
    (["--kv-unified-per-slot", "512", "--ctx-per-request", "512"], "set the same limit: give one"),
    (["--embd-normalize", "-2"], "--embd-normalize is -1 (none) or more"),
    (["-sm", "layer", "--executors", "2"], "give the GPUs of all executors with --gpus"),
    (["-ts", "3,1"], "use it with -sm layer, row or tensor"),
    (["-sm", "layer", "-ts", "3,x"], "proportions are numbers"),
    (["-sm", "split"], "invalid choice"),
])
def test_bad_context_embedding_and_split_flags_are_usage_errors(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*argv))
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_llama_server_split_flags_map_onto_the_config_and_the_executors_parameters() -> None:
    from executor.model.params import model_params

    cfg = config_from_args(parse("-sm", "row", "--gpus", "0,1,2,3", "--executors", "2", "-ts", "3/1", "-mg", "1"))
    assert (cfg.split_mode, cfg.tensor_split, cfg.main_gpu, cfg.gpus) == ("row", [3.0, 1.0], 1, ["0", "1", "2", "3"])
    params = model_params(cfg)
    assert (params.split_mode, params.main_gpu) == (2, 1)
    assert (params.tensor_split[0], params.tensor_split[1], params.tensor_split[2]) == (3.0, 1.0, 0.0)
    plain = model_params(config_from_args(parse("-mg", "1")))  # -sm none: the executor's one GPU
    assert (plain.split_mode, plain.main_gpu, bool(plain.tensor_split)) == (0, 0, False)


def test_control_vector_flags_add_to_one_list_with_absolute_paths(tmp_path, capsys) -> None:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    cfg = config_from_args(parse("--control-vector", str(a), "--control-vector-scaled", f"{b}:-0.5,{a}:2",
                                 "--control-vector-layer-range", "3", "9"))
    assert [(f.path, f.scale) for f in cfg.control_vectors] == [(str(a), 1.0), (str(b), -0.5), (str(a), 2.0)]
    assert tuple(cfg.control_vector_layers) == (3, 9)
    assert (config_from_args(parse()).control_vectors, tuple(config_from_args(parse()).control_vector_layers)) == (
        [], (0, 0))
    with pytest.raises(SystemExit):
        config_from_args(parse("--control-vector", str(tmp_path / "missing.gguf")))
    assert "control vector file not found" in capsys.readouterr().err


def test_image_token_budget_flags_map_onto_the_config(capsys) -> None:
    assert tuple(config_from_args(parse("--image-min-tokens", "8", "--image-max-tokens", "64")).image_tokens) == (8, 64)
    assert tuple(config_from_args(parse()).image_tokens) == (-1, -1)
    for argv in (["--image-max-tokens", "0"], ["--image-min-tokens", "9", "--image-max-tokens", "4"]):
        with pytest.raises(SystemExit):
            config_from_args(parse(*argv))
    assert "--image-min-tokens is more than --image-max-tokens" in capsys.readouterr().err


def test_llama_server_chat_and_projector_flags_map_onto_the_config(tmp_path, caplog) -> None:
    projector = tmp_path / "mmproj.gguf"
    projector.write_bytes(b"x")
    cfg = config_from_args(parse("-mm", str(projector), "--mtmd-batch-max-tokens", "64", "--no-prefill-assistant"))
    assert (cfg.mmproj, cfg.mtmd_batch_max_tokens, cfg.prefill_assistant) == (str(projector), 64, False)
    assert config_from_args(parse("--mmproj", str(projector), "--no-mmproj")).mmproj == ""
    plain = config_from_args(parse("--mmproj-auto", "--cache-idle-slots", "--prefill-assistant"))
    assert (plain.mmproj, plain.mtmd_batch_max_tokens, plain.prefill_assistant) == ("", 0, True)
    with caplog.at_level(logging.WARNING, logger="ggserve"):
        config_from_args(parse("-ctxcp", "8", "--no-cache-idle-slots"))
    assert "--ctx-checkpoints is accepted without effect" in caplog.text
    assert "--no-cache-idle-slots is accepted without effect" in caplog.text


def test_model_presets_that_download_are_usage_errors(capsys) -> None:
    for flag in ("--gpt-oss-20b-default", "--fim-qwen-7b-spec", "-cl"):
        with pytest.raises(SystemExit) as exc:
            config_from_args(parse(flag))
        assert exc.value.code == 2 and "ggserve does not download models" in capsys.readouterr().err


def test_load_and_lazy_modes_reach_the_model_parameters() -> None:
    from executor.model.params import model_params

    params = model_params(config_from_args(parse("-lm", "mmap+mlock", "-lzm", "on")))
    assert (params.load_mode, params.lazy_mode) == (3, 2)
    plain = model_params(config_from_args(parse()))
    assert (plain.load_mode, plain.lazy_mode) == (-1, 1)  # llama.cpp's auto


def test_ui_config_flags_hold_a_json_object(tmp_path, capsys) -> None:
    assert config_from_args(parse("--ui-config", '{"theme": "dark"}')).ui_settings == '{"theme": "dark"}'
    path = tmp_path / "ui.json"
    path.write_text('{"systemMessage": "x"}')
    assert config_from_args(parse("--webui-config-file", str(path))).ui_settings == '{"systemMessage": "x"}'
    assert config_from_args(parse()).ui_settings == ""
    for argv, message in ((["--ui-config", "[1]"], "must be a JSON object"), (["--ui-config", "{x"], "is not JSON"),
                          (["--ui-config", "{}", "--ui-config-file", str(path)], "cannot be used together")):
        with pytest.raises(SystemExit):
            config_from_args(parse(*argv))
        assert message in capsys.readouterr().err


def test_draft_model_flags_reach_the_draft_models_parameters_only() -> None:
    from executor.model.params import CACHE_TYPES as EXECUTOR_CACHE_TYPES, context_params, model_params
    from ggserve.config import CACHE_TYPES

    assert tuple(EXECUTOR_CACHE_TYPES) == CACHE_TYPES  # the flags' choices are what the executor maps
    cfg = config_from_args(parse("-t", "3", "-ctk", "q8_0", "-td", "2", "-tbd", "5", "-ctkd", "q4_0", "-ctvd", "q8_0",
                                 "-devd", "none", "-ngld", "0"))
    target, draft = context_params(cfg, 4), context_params(cfg, 4, draft=True)
    assert (target.n_threads, target.type_k, target.type_v) == (3, 8, 1)  # q8_0, f16
    assert (draft.n_threads, draft.n_threads_batch, draft.type_k, draft.type_v) == (2, 5, 2, 8)  # q4_0, q8_0
    assert (model_params(cfg).devices, model_params(cfg, draft=True).devices != 0) == (None, True)
    assert model_params(cfg, draft=True).n_gpu_layers == 0
    plain = context_params(config_from_args(parse("-t", "3")), 4, draft=True)
    assert (plain.n_threads, plain.n_threads_batch, plain.type_k) == (3, 3, 1)  # the target's threads, f16


@pytest.mark.parametrize("flags", [("--port", "99999"), ("--port", "-1"), ("-c", "512", "--ctx-per-request", "1024")])
def test_impossible_ports_and_request_contexts_are_usage_errors(flags: tuple[str, ...]) -> None:
    """Refused with exit code 2 before a model loads (a port out of range failed after the load;
    a request context above the pool was silently capped)."""
    with pytest.raises(SystemExit) as exc:
        config_from_args(parse(*flags))
    assert exc.value.code == 2


def test_context_shift_holds_a_request_to_its_slots_share_of_the_pool() -> None:
    # a shifting generation may never end: with all of -c, three of them starved every other request
    assert config_from_args(parse("--context-shift", "-c", "4096", "-np", "4")).ctx_per_request == 1024
    assert config_from_args(parse("-c", "4096", "-np", "4")).ctx_per_request == 0  # all of -c
    given = parse("--context-shift", "-c", "4096", "-np", "4", "--ctx-per-request", "3000")
    assert config_from_args(given).ctx_per_request == 3000


def test_help_says_flags_come_from_the_environment_too(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "LLAMA_ARG_" in out and "GGSERVE_MAX_QUEUE" in out
