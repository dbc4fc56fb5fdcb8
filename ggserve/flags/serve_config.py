"""The parsed ``serve`` flags, checked together and turned into one model's ServeConfig: paths
made absolute, llama-server's forms of a setting reconciled, what cannot work together refused
with a usage error (exit 2) before anything loads.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
from pathlib import Path

from ggserve import gpu_groups
from ggserve.config import DRAFT_MODEL_TYPE, ScaledFile, ServeConfig, cpu_has_amx
from ggserve.flags import cpu_placement, llama_server, output
from ggserve.flags.parser import EMBEDDING_SEQUENCES, SAMPLING_FLAGS
from ggserve.models.resolve import resolve_model
from ggserve.samplers import sampler_order


class UsageError(SystemExit):
    """A bad command line: the message, then exit code 2 (as argparse does)."""

    def __init__(self, message: str) -> None:
        print(message, file=sys.stderr)
        super().__init__(2)


def _absolute(files: list[ScaledFile], what: str) -> list[ScaledFile]:
    """The files with absolute paths (the executors load them); a missing file is a usage error."""
    resolved = []
    for file in files:
        path = Path(file.path).expanduser()
        if not path.is_file():
            raise UsageError(f"ggserve: {what} file not found: {path}")
        resolved.append(ScaledFile(str(path.resolve()), file.scale))
    return resolved


def _sampling_defaults(args: argparse.Namespace) -> dict[str, float | int | list[str]]:
    """The sampling flags given, as SamplingParams fields (checked like a request's)."""
    values: dict[str, float | int | list[str]] = {
        field: value for _, field, _, _ in SAMPLING_FLAGS if (value := getattr(args, f"sampling_{field}")) is not None
    }
    breakers = args.sampling_dry_sequence_breakers
    if breakers is not None:
        values["dry_sequence_breakers"] = [] if breakers == ["none"] else breakers
    try:
        if args.samplers:
            values["samplers"] = sampler_order([n for n in args.samplers.split(";") if n])
        elif args.sampler_seq:
            values["samplers"] = sampler_order(args.sampler_seq)
    except ValueError as exc:
        raise UsageError(f"ggserve: {exc}") from None
    if values.get("mirostat", 0) not in (0, 1, 2):
        raise UsageError("ggserve: --mirostat is 0, 1 or 2")
    if args.n_predict < -1 or args.n_predict == 0:
        raise UsageError("ggserve: --n-predict is -1 (no limit) or at least 1")
    return values


def _json_object(text: str, flag: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"ggserve: {flag} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"ggserve: {flag} must be a JSON object")
    return value


def _chat_template_kwargs(text: str) -> dict[str, object]:
    return _json_object(text, "--chat-template-kwargs") if text else {}


def _api_prefix(text: str) -> str:
    prefix = text.strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix


def _ui_settings(args: argparse.Namespace) -> str:
    """--ui-config / --ui-config-file: a JSON object's text ("" without either)."""
    if args.ui_config is not None and args.ui_config_file is not None:
        raise UsageError("ggserve: --ui-config and --ui-config-file cannot be used together")
    text = args.ui_config
    if args.ui_config_file is not None:
        try:
            text = Path(args.ui_config_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"ggserve: --ui-config-file {args.ui_config_file}: {exc}") from None
    if text is None:
        return ""
    _json_object(text, "--ui-config")
    return text


def _static_path(path: str) -> str:
    """--path: a directory that exists (llama-server refuses to start otherwise too)."""
    if path and not os.path.isdir(path):
        raise UsageError(f"ggserve: --path {path}: no such directory")
    return os.path.abspath(path) if path else ""


def _api_keys(args: argparse.Namespace) -> list[str]:
    keys = [k.strip() for value in args.api_key for k in value.split(",") if k.strip()]
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"ggserve: --api-key-file {args.api_key_file}: {exc.strerror or exc}") from None
    return keys


def _listen_address(host: str) -> str:
    """--host: an address, or a name (``localhost``) resolved to its first address, as llama-server
    takes it (granian listens on addresses only)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise UsageError(f"ggserve: --host {host}: {exc.strerror or exc}") from None


def _embedding_mode(args: argparse.Namespace) -> None:
    """Resolve --reranking (--embeddings with rank pooling) and the embedding server's defaults."""
    if args.reranking:
        if args.pooling not in ("", "rank"):
            raise UsageError("ggserve: --reranking uses --pooling rank")
        args.embeddings, args.pooling = True, "rank"
    if args.pooling and not args.embeddings:
        raise UsageError("ggserve: --pooling needs --embeddings (or --reranking)")
    if args.embd_max_inputs < 1:
        raise UsageError("ggserve: --embd-max-inputs must be at least 1")
    if args.n_parallel is None:
        args.n_parallel = EMBEDDING_SEQUENCES if args.embeddings else ServeConfig(model="").n_parallel


# --spec-default's settings, as llama-server's ngram-mod ones map onto ggserve's
SPEC_DEFAULT = {"spec_type": "ngram-mod", "spec_ngram_size_n": 24, "spec_draft_n_min": 48, "spec_ngram_size_m": 64}


def _check_speculative(args: argparse.Namespace) -> None:
    if args.spec_default:
        unset = ServeConfig(model="", spec_type="none")
        for dest, value in SPEC_DEFAULT.items():
            if getattr(args, dest) == getattr(unset, dest):
                setattr(args, dest, value)
    if args.spec_type == "none":
        args.spec_type = DRAFT_MODEL_TYPE if args.spec_draft_model else ""
    if (args.spec_type == DRAFT_MODEL_TYPE) != bool(args.spec_draft_model):
        raise UsageError("ggserve: a draft model (-md FILE) goes with --spec-type draft-simple "
                         "(the n-gram types need none)")
    if args.spec_draft_model and not os.path.isfile(args.spec_draft_model):
        raise UsageError(f"ggserve: the draft model {args.spec_draft_model} does not exist")
    if args.spec_draft_n_max < 0 or args.spec_draft_n_min < 0 or not 0.0 <= args.spec_draft_p_min <= 1.0:
        raise UsageError("ggserve: --spec-draft-n-max and --spec-draft-n-min cannot be negative, "
                         "--spec-draft-p-min is in [0, 1]")
    if not 1 <= args.spec_ngram_size_n <= 1024 or not 1 <= args.spec_ngram_size_m <= 1024:
        raise UsageError("ggserve: --spec-ngram-size-n and --spec-ngram-size-m are in [1, 1024]")
    if args.spec_ngram_min_hits < 1:
        raise UsageError("ggserve: --spec-ngram-min-hits must be at least 1")


def _context_sizes(args: argparse.Namespace) -> None:
    """-c, and llama-server's --kv-unified-per-slot N: a request's limit, and the pool's size
    (-np x N) when -c is not given."""
    per_slot = args.kv_unified_per_slot
    if per_slot is not None:
        if per_slot < 1:
            raise UsageError("ggserve: --kv-unified-per-slot must be at least 1")
        if args.ctx_per_request:
            raise UsageError("ggserve: --kv-unified-per-slot and --ctx-per-request set the same limit: give one")
        args.ctx_per_request = per_slot
    if args.ctx_size is None:
        args.ctx_size = args.n_parallel * per_slot if per_slot else max(ServeConfig(model="").ctx_size,
                                                                           args.ctx_per_request)


def engine_config(args: argparse.Namespace) -> ServeConfig:
    if args.model_file:  # vllm serve's form: the model first
        if args.model:
            raise UsageError("ggserve: give the model once, with -m or as the first argument")
        args.model = args.model_file
    if not args.mmproj_auto:
        args.mmproj = ""  # --no-mmproj
    _embedding_mode(args)
    _context_sizes(args)
    for flag, value in (("--parallel", args.n_parallel), ("--executors", args.executors),
                        ("--http-workers", args.http_workers)):
        if value < 1:
            raise UsageError(f"ggserve: {flag} must be at least 1, not {value}")
    if args.context_shift and not args.ctx_per_request:
        # A shifting generation may never end: held to its slot's share of the pool (llama-server's
        # context per slot) it cannot take the other slots' cells, preempting them for good.
        args.ctx_per_request = args.ctx_size // args.n_parallel
    if args.ctx_per_request < 0:
        raise UsageError("ggserve: --ctx-per-request cannot be negative")
    if args.max_queue < 0:
        raise UsageError("ggserve: --max-queue cannot be negative (0: no request waits for a slot)")
    if args.ctx_per_request > args.ctx_size:
        raise UsageError(f"ggserve: --ctx-per-request {args.ctx_per_request} is more than the KV pool "
                         f"(--ctx-size {args.ctx_size}) holds")
    if not 1 <= args.port <= 65535:
        raise UsageError(f"ggserve: --port {args.port} is not a TCP port (1-65535)")
    if min(args.control_vector_layers) < 0:
        raise UsageError("ggserve: --control-vector-layer-range takes layer numbers (0: the first / last)")
    if args.embd_normalize < -1:
        raise UsageError("ggserve: --embd-normalize is -1 (none) or more")
    if args.ctx_size < args.n_parallel * 16:
        raise UsageError(f"ggserve: --ctx-size {args.ctx_size} is too small for {args.n_parallel} slots")
    if args.batch_size < args.n_parallel:
        raise UsageError("ggserve: --batch-size must be at least --parallel (one decode token per slot)")
    if args.timeout <= 0:
        raise UsageError("ggserve: --timeout must be positive")
    if args.step_timeout <= 0 or args.shutdown_timeout < 0 or args.max_restarts < 0:
        raise UsageError("ggserve: --step-timeout must be positive, --shutdown-timeout and --max-restarts not negative")
    if args.n_keep < -1 or args.cache_reuse < 0:
        raise UsageError("ggserve: --keep must be -1 (the whole prompt) or a number of tokens, "
                         "--cache-reuse not negative")
    _check_speculative(args)
    if args.reasoning_budget < -1:
        raise UsageError("ggserve: --reasoning-budget must be -1 (no limit) or a number of tokens")
    if args.slot_save_path and not os.path.isdir(args.slot_save_path):
        raise UsageError(f"ggserve: --slot-save-path {args.slot_save_path} is not a directory")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise UsageError("ggserve: --ssl-keyfile and --ssl-certfile go together")
    for flag, path in (("--ssl-keyfile", args.ssl_keyfile), ("--ssl-certfile", args.ssl_certfile),
                       ("--chat-template-file", args.chat_template_file)):
        if path and not os.path.isfile(path):
            raise UsageError(f"ggserve: {flag} {path} is not a file")
    if args.mmproj and not os.path.isfile(args.mmproj):
        raise UsageError(f"ggserve: --mmproj {args.mmproj} is not a file")
    if args.mmproj and (args.embeddings or args.reranking):
        raise UsageError("ggserve: --mmproj serves images and audio to a generation server, not with --embeddings")
    if args.media_max_bytes <= 0 or args.media_fetch_timeout <= 0:
        raise UsageError("ggserve: --media-max-bytes and --media-fetch-timeout must be positive")
    if args.video_max_frames <= 0 or args.video_decode_timeout <= 0:
        raise UsageError("ggserve: --video-max-frames and --video-decode-timeout must be positive")
    if args.video_fps <= 0:  # llama-server's 0 (the video's own rate) needs ffprobe, which ggserve does without
        raise UsageError("ggserve: --video-fps must be positive (ggserve samples videos at a set rate)")
    if min(args.image_min_tokens, args.image_max_tokens) < -1 or 0 in (args.image_min_tokens, args.image_max_tokens):
        raise UsageError("ggserve: --image-min-tokens and --image-max-tokens are positive (-1: the model's)")
    if args.mtmd_batch_max_tokens < 0:
        raise UsageError("ggserve: --mtmd-batch-max-tokens cannot be negative")
    if 0 < args.image_max_tokens < args.image_min_tokens:
        raise UsageError("ggserve: --image-min-tokens is more than --image-max-tokens")
    if args.log_prompts_dir:
        try:
            os.makedirs(args.log_prompts_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"ggserve: --log-prompts-dir {args.log_prompts_dir}: {exc.strerror}") from None
    if args.media_path and not os.path.isdir(args.media_path):
        raise UsageError(f"ggserve: --media-path {args.media_path} is not a directory")
    if args.video_ffmpeg_dir and not os.path.isdir(args.video_ffmpeg_dir):
        raise UsageError(f"ggserve: --video-ffmpeg-dir {args.video_ffmpeg_dir} is not a directory")
    try:
        cpu, cpu_batch = cpu_placement.placements(args)
        draft_cpu, draft_cpu_batch = cpu_placement.placements(args, draft=True)
        llama_server.check(args)
        rope = llama_server.rope_settings(args)
        grammar, json_schema = output.grammar_defaults(args)
        cpu_only = llama_server.cpu_only(args.device, "-dev")
        draft_cpu_only = llama_server.cpu_only(args.device_draft, "-devd")
        if llama_server.cpu_only(args.mmproj_device, "-mmdev"):
            args.mmproj_offload = False
        gpu_groups.check_split([g for g in args.gpus.split(",") if g], args.executors, args.split_mode,
                               args.main_gpu, args.tensor_split)
        for value in args.logit_bias:
            output.parse_logit_bias(value)
    except ValueError as exc:
        raise UsageError(f"ggserve: {exc}") from None
    # Flags whose dest is a ServeConfig field map one to one; the rest are derived here.
    fields = {f: getattr(args, f) for f in ServeConfig.__struct_fields__ if hasattr(args, f)}
    fields.update(
        model=resolve_model(args.model) if args.model or not (args.models_dir or args.models_preset) else "",
        repack=not cpu_has_amx() if args.repack is None else args.repack,
        gpus=[g for g in args.gpus.split(",") if g],
        api_keys=_api_keys(args),
        host=_listen_address(args.host),
        log_level="debug" if args.verbose else args.log_level,
        sampling=_sampling_defaults(args),
        grammar=grammar,
        json_schema=json_schema,
        cpu_only=cpu_only,
        spec_draft_cpu_only=draft_cpu_only,
        chat_template_kwargs=llama_server.template_defaults(args, _chat_template_kwargs(args.chat_template_kwargs)),
        cors_origins=[o.strip() for o in args.cors_origins.split(",") if o.strip()],
        api_prefix=_api_prefix(args.api_prefix),
        slot_save_path=os.path.abspath(args.slot_save_path) if args.slot_save_path else "",
        static_path=_static_path(args.static_path),
        ui_settings=_ui_settings(args),
        lora=_absolute(args.lora, "LoRA adapter"),
        control_vectors=_absolute(args.control_vectors, "control vector"),
        spec_draft_model=os.path.abspath(args.spec_draft_model) if args.spec_draft_model else "",
        mmproj=os.path.abspath(args.mmproj) if args.mmproj else "",
        video_ffmpeg_dir=os.path.abspath(args.video_ffmpeg_dir) if args.video_ffmpeg_dir else "",
        media_path=os.path.abspath(args.media_path) if args.media_path else "",
        log_prompts_dir=os.path.abspath(args.log_prompts_dir) if args.log_prompts_dir else "",
        image_tokens=(args.image_min_tokens, args.image_max_tokens),
        cpu=cpu,
        cpu_batch=cpu_batch,
        spec_draft_cpu=draft_cpu,
        spec_draft_cpu_batch=draft_cpu_batch,
        rope=rope,
    )
    return ServeConfig(**fields)
