"""The ``ggserve serve`` command line: every flag, its type, default and help (argparse).

Flag names follow llama-server's wherever the meaning is the same, so its users can switch; vllm
serve's names are aliases of the same settings. What the flags mean together is checked when they
become the configuration (``ggserve.flags.serve_config``).
"""

from __future__ import annotations

import argparse
import math

from ggserve import gpu_groups, installed_version
from ggserve.chat_templates import builtin_names
from ggserve.config import CACHE_TYPES, SPEC_TYPES, ScaledFile, ServeConfig
from ggserve.flags import completion, cpu_placement, llama_server, output
from ggserve.flags.env import apply_env_defaults
from ggserve.logs import FORMATS


# An embedding server's default -np: sequences (inputs) one decode may hold. Short inputs pack
# many to a batch (26 of 19 tokens fill 512); llama.cpp allows up to 256.
EMBEDDING_SEQUENCES = 64


def version_text() -> str:
    return f"ggserve {installed_version('ggserve')} (llama-cpp-python {installed_version('llama-cpp-python')})"


def serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve a GGUF model behind the OpenAI API",
                       epilog="Every flag can also come from the environment: llama-server's LLAMA_ARG_* name where it "
                       "has one (LLAMA_ARG_CTX_SIZE, LLAMA_API_KEY, ...), else GGSERVE_ and the long flag's name "
                       "(GGSERVE_MAX_QUEUE for --max-queue); the command line wins.")
    p.add_argument("--completion-bash", action=completion.CompletionBash, subcommands=sub,
                   help="print a bash completion script for ggserve and exit: "
                   "source <(ggserve serve --completion-bash)")
    d = ServeConfig(model="")
    m = p.add_argument_group("model")
    m.add_argument("-m", "--model", default="", help="GGUF file (default: embedded Gemma 3 270M)")
    m.add_argument("model_file", nargs="?", default="", metavar="MODEL.gguf",
                   help="the GGUF file, as vllm serve takes it (same as -m)")
    m.add_argument("-a", "--alias", dest="aliases", type=_names, default=[], metavar="NAME,...",
                   help="names the API answers to, comma-separated; the first in sorted order is the model id, "
                   "as in llama-server (default: the file name)")
    m.add_argument("--tags", type=_names, default=[], metavar="TAG,...",
                   help="tags /v1/models shows for the model, comma-separated (informational)")
    m.add_argument("--chat-template-file", default="", help="jinja chat template overriding the GGUF's")
    m.add_argument("--prefill-assistant", dest="prefill_assistant", action="store_true", default=True,
                   help="a chat ending with an assistant message continues it (the default)")
    m.add_argument("--no-prefill-assistant", dest="prefill_assistant", action="store_false",
                   help="a final assistant message is a closed turn, answered in a new one")
    m.add_argument("-sp", "--special", action="store_true",
                   help="replies write control tokens (end of generation, turn markers) as their text")
    m.add_argument("--spm-infill", action="store_true",
                   help="fill-in-the-middle prompts (/infill, a suffix) put the suffix before the prefix")
    m.add_argument("--chat-template", default="", choices=["", *builtin_names()], metavar="NAME",
                   help=f"a built-in chat template overriding the GGUF's: {', '.join(builtin_names())}")
    m.add_argument("--chat-template-kwargs", default="", help='JSON object of extra template variables, '
                   'e.g. \'{"enable_thinking": false}\'')
    em = p.add_argument_group("embeddings and reranking")
    em.add_argument("--embeddings", "--embedding", action="store_true",
                    help="serve /v1/embeddings (an embedding server: generation endpoints answer 501)")
    em.add_argument("--reranking", "--rerank", action="store_true",
                    help="serve /v1/rerank with the model's classification head (--embeddings --pooling rank)")
    em.add_argument("--pooling", choices=["none", "mean", "cls", "last", "rank"], default=d.pooling,
                    help="how an input's token vectors become one (default: the GGUF's)")
    em.add_argument("--embd-normalize", type=int, default=d.embd_normalize, metavar="N",
                    help="norm of the vectors of requests that set no embd_normalize: -1 none, 0 max absolute "
                    "int16, 1 taxicab, 2 euclidean (default), > 2 p-norm")
    em.add_argument("--embd-max-inputs", type=int, default=d.embd_max_inputs,
                    help="inputs (or rerank documents) one request may have")
    # Both flags add to one list, so adapter ids follow the command line's order (as llama-server's).
    m.add_argument("--lora", dest="lora", action="extend", type=_files, default=[], metavar="FNAME",
                   help="LoRA adapter at scale 1 (repeatable, or comma-separated)")
    m.add_argument("--lora-scaled", dest="lora", action="extend", type=_scaled_files, metavar="FNAME:SCALE",
                   help="LoRA adapter at this scale (repeatable, or comma-separated)")
    m.add_argument("--lora-init-without-apply", action="store_true",
                   help="load the LoRA adapters at scale 0 (set scales later with POST /lora-adapters)")
    m.add_argument("--control-vector", dest="control_vectors", action="extend", type=_files, default=[],
                   metavar="FNAME", help="control vector at scale 1 (repeatable, or comma-separated)")
    m.add_argument("--control-vector-scaled", dest="control_vectors", action="extend", type=_scaled_files,
                   metavar="FNAME:SCALE", help="control vector at this scale (repeatable, or comma-separated)")
    m.add_argument("--control-vector-layer-range", dest="control_vector_layers", type=int, nargs=2,
                   default=(0, 0), metavar=("START", "END"), help="layers the control vectors apply to (inclusive)")
    mm = p.add_argument_group("multimodal input")
    mm.add_argument("-mm", "--mmproj", default="", metavar="FILE",
                    help="multimodal projector GGUF: images and/or audio in prompts (the model's mmproj file)")
    mm.add_argument("--mmproj-auto", dest="mmproj_auto", action="store_true", default=True,
                    help="use the projector --mmproj names (the default; llama-server's -hf picks one itself)")
    mm.add_argument("--no-mmproj", "--no-mmproj-auto", dest="mmproj_auto", action="store_false",
                    help="load no projector, even one --mmproj names")
    mm.add_argument("--mtmd-batch-max-tokens", type=int, default=d.mtmd_batch_max_tokens, metavar="N",
                    help="image embeddings the executor encodes in one batch at most (0: llama.cpp's default)")
    mm.add_argument("--mmproj-offload", dest="mmproj_offload", action="store_true", default=d.mmproj_offload,
                    help="run the media encoder on the GPU with the model (the default)")
    mm.add_argument("--no-mmproj-offload", dest="mmproj_offload", action="store_false",
                    help="run the media encoder on the CPU even when the model is on a GPU")
    mm.add_argument("-mmdev", "--mmproj-device", default="", metavar="none",
                    help="'none': the media encoder on the CPU, as --no-mmproj-offload (default: with the model)")
    mm.add_argument("--image-min-tokens", type=int, default=-1, metavar="N",
                    help="least embeddings an image takes on models that resize pictures to a token budget "
                    "(Qwen2-VL, ...; default: the model's)")
    mm.add_argument("--image-max-tokens", type=int, default=-1, metavar="N",
                    help="most embeddings an image takes there")
    mm.add_argument("--media-max-bytes", type=int, default=d.media_max_bytes,
                    help=f"largest image, audio or video file a request may send ({d.media_max_bytes} bytes)")
    mm.add_argument("--allow-remote-media", action="store_true",
                    help="let image_url and video parts be http(s) URLs the server fetches (default: data: URIs only)")
    mm.add_argument("--media-path", default="", metavar="DIR",
                    help="a directory whose files image_url and other media parts may name as file:// URLs "
                    "(relative paths inside it)")
    mm.add_argument("--media-fetch-timeout", type=float, default=d.media_fetch_timeout,
                    help=f"seconds a remote media fetch may take ({d.media_fetch_timeout:g})")
    mm.add_argument("--video-fps", type=float, default=d.video_fps, metavar="N",
                    help=f"video frames sampled per second ({d.video_fps:g})")
    mm.add_argument("--video-timestamp-interval", type=int, default=d.video_timestamp_interval, metavar="MS",
                    help=f"milliseconds between the timestamp texts among video frames "
                    f"({d.video_timestamp_interval}; 0: none)")
    mm.add_argument("--video-ffmpeg-dir", default=d.video_ffmpeg_dir, metavar="DIR",
                    help="directory holding the ffmpeg that decodes videos (default: PATH, then the imageio-ffmpeg "
                    "package's)")
    mm.add_argument("--video-max-frames", type=int, default=d.video_max_frames, metavar="N",
                    help=f"frames one video may give at --video-fps ({d.video_max_frames})")
    mm.add_argument("--video-decode-timeout", type=float, default=d.video_decode_timeout, metavar="SECONDS",
                    help=f"seconds ffmpeg may take to decode one video ({d.video_decode_timeout:g})")
    e = p.add_argument_group("engine")
    e.add_argument("-np", "--parallel", dest="n_parallel", type=int, default=None,
                   help=f"slots per executor ({d.n_parallel}; an embedding server: inputs per decode, "
                   f"{EMBEDDING_SEQUENCES})")
    e.add_argument("-c", "--ctx-size", type=int, default=None,
                   help=f"KV cells per executor, one pool for its slots ({d.ctx_size})")
    e.add_argument(
        "--ctx-per-request", type=int, default=d.ctx_per_request,
        help="tokens (prompt + output) one request may hold (default 0: the whole -c; without -c the pool "
        "holds at least this many)",
    )
    e.add_argument("--kv-unified-per-slot", type=int, default=None, metavar="N",
                   help="llama-server's name for --ctx-per-request N; without -c the pool is then -np x N cells")
    e.add_argument("-b", "--batch-size", type=int, default=d.batch_size,
                   help=f"most tokens one engine step decodes ({d.batch_size})")
    e.add_argument("-ub", "--ubatch-size", type=int, default=d.ubatch_size,
                   help=f"most tokens llama.cpp computes at once within a step ({d.ubatch_size})")
    e.add_argument("-t", "--threads", type=int, default=d.threads,
                   help="llama.cpp threads of each executor (0, the default, or less: the cores, shared among "
                   "executors)")
    e.add_argument("-tb", "--threads-batch", type=int, default=d.threads_batch,
                   help="threads for prompt processing (0, the default: as --threads)")
    _vllm_aliases(p.add_argument_group("vllm serve's names"))
    cpu_placement.add_flags(p.add_argument_group("CPU placement of llama.cpp's threads (llama-server's flags)"))
    llama_server.add_flags(e, p.add_argument_group("llama-server compatibility"))
    p.add_argument("--version", action="version", version=version_text())
    e.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", type=int, default=d.n_gpu_layers,
                   help=f"layers on the GPU ({d.n_gpu_layers}: all of them)")
    e.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default=d.flash_attn,
                   help=f"flash attention ({d.flash_attn}: where the device has it)")
    e.add_argument("-ctk", "--cache-type-k", choices=CACHE_TYPES, default=d.cache_type_k,
                   help=f"data type of the KV cache's keys ({d.cache_type_k})")
    e.add_argument("-ctv", "--cache-type-v", choices=CACHE_TYPES, default=d.cache_type_v,
                   help=f"data type of the KV cache's values ({d.cache_type_v}; a quantized type needs -fa)")
    e.add_argument(
        "-nr", "--no-repack", dest="repack", action="store_false", default=None,
        help="no CPU weight repacking (default: off on AMX CPUs, whose llama.cpp path can crash)",
    )
    e.add_argument("--repack", dest="repack", action="store_true", help="CPU weight repacking, even on AMX CPUs")
    e.add_argument("--executors", type=int, default=d.executors,
                   help=f"data-parallel executors, each with the whole model and its own -c and -np ({d.executors})")
    e.add_argument("--gpus", default="", help="comma-separated CUDA device per executor (with -sm layer / row / "
                   "tensor: all executors' GPUs, an equal share each)")
    e.add_argument("-sm", "--split-mode", choices=gpu_groups.SPLIT_MODES, default=d.split_mode,
                   help="none (default): one GPU per executor, each with the whole model; layer / row / tensor: "
                   "an executor spreads its model over its GPUs, as llama-server does")
    e.add_argument("-mg", "--main-gpu", type=int, default=d.main_gpu, metavar="INDEX",
                   help="-sm none: the first executor's GPU (the next ones follow); else the GPU, among an "
                   "executor's, for row splits' results and the KV cache")
    e.add_argument("-ts", "--tensor-split", type=_proportions, default=[], metavar="N0,N1,...",
                   help="proportions of the model on each of an executor's GPUs, e.g. 3,1")
    e.add_argument("--max-queue", type=int, default=d.max_queue,
                   help=f"requests that may wait for a slot before new ones get 503 ({d.max_queue}; 0: none)")
    e.add_argument(
        "--step-timeout", type=float, default=d.step_timeout,
        help=f"seconds one engine step may take before its executor is declared hung and restarted "
        f"({d.step_timeout:g})",
    )
    e.add_argument("--prefix-cache", "--cache-prompt", dest="prefix_cache", action="store_true", default=d.prefix_cache,
                   help="reuse cached prefixes of prompts (the default)")
    e.add_argument("--no-prefix-cache", "--no-cache-prompt", dest="prefix_cache", action="store_false",
                   help="never reuse cached prefixes")
    e.add_argument(
        "-cram", "--cache-ram", type=int, default=d.cache_ram,
        help="MiB of host memory keeping prefixes evicted from the KV cache, restored instead of "
        "recomputed (-1: no limit, 0: off)",
    )
    e.add_argument(
        "--context-shift", dest="context_shift", action="store_true", default=d.context_shift,
        help="a generation that fills its context goes on: half of the tokens after n_keep are dropped "
        "(models whose KV cache can shift; default: off, the generation stops)",
    )
    e.add_argument("--no-context-shift", dest="context_shift", action="store_false",
                   help="a generation that fills its context stops (the default)")
    e.add_argument(
        "--async-scheduling", dest="async_scheduling", action="store_true", default=d.async_scheduling,
        help="while a decode step runs, plan the next one, which feeds the tokens the running step samples "
        "(default: on; only steady decoding without speculation is planned ahead)",
    )
    e.add_argument("--no-async-scheduling", dest="async_scheduling", action="store_false",
                   help="plan each step after the one before has ended")
    e.add_argument(
        "-bs", "--backend-sampling", action="store_true", default=d.backend_sampling,
        help="greedy requests and llama-server's default sampled chain (top-k, top-p, min-p, temperature) "
        "sample on the model's device, so no logits reach the host when all of a step's rows do; logprobs, "
        "grammars and other samplers stay on the host (a GPU option: on a CPU it is slower)",
    )
    e.add_argument("--keep", dest="n_keep", type=int, default=d.n_keep,
                   help="prompt tokens a context shift keeps when a request sets no n_keep (-1: all)")
    e.add_argument("--cache-reuse", type=int, default=d.cache_reuse,
                   help="min chunk (tokens) of a cached prompt reused past a change by shifting its KV, when a "
                   "request sets no n_cache_reuse (0: off; models whose KV cache can shift)")
    e.add_argument("-s", "--seed", type=int, default=d.seed, help="default sampling seed (-1: random)")
    e.add_argument(
        "--reasoning-format", choices=["none", "deepseek", "deepseek-legacy", "auto"], default=d.reasoning_format,
        help="where thinking text goes: reasoning_content (deepseek, auto) or content (none)",
    )
    e.add_argument("--skip-chat-parsing", dest="skip_chat_parsing", action="store_true",
                   help="replies are all content: no reasoning or tool calls are read out of them")
    e.add_argument("--no-skip-chat-parsing", dest="skip_chat_parsing", action="store_false",
                   help="read reasoning and tool calls out of replies (the default)")
    sampling = p.add_argument_group("sampling defaults (a request's own fields win)")
    _sampling_flags(sampling)
    output.add_flags(sampling)
    _speculative_flags(p.add_argument_group("speculative decoding"), d)
    e.add_argument(
        "--reasoning-budget", type=int, default=d.reasoning_budget,
        help="thinking tokens before the closing tag is forced (-1: no limit, 0: no thinking)",
    )
    e.add_argument("--reasoning-budget-message", default=d.reasoning_budget_message,
                   help="text forced before the closing tag when the reasoning budget is spent")
    llama_server.add_reasoning_flags(e)
    h = p.add_argument_group("http")
    h.add_argument("--host", default=d.host,
                   help=f"address or name to listen on ({d.host}; 0.0.0.0: every interface)")
    h.add_argument("--port", type=int, default=d.port, help=f"TCP port to listen on ({d.port})")
    h.add_argument("--http-workers", type=int, default=d.http_workers,
                   help=f"HTTP worker processes, each with its own event loop and link to the scheduler "
                   f"({d.http_workers})")
    h.add_argument("--api-key", dest="api_key", action="append", default=[],
                   help="accepted key (repeatable, or comma-separated)")
    h.add_argument("--api-key-file", default="", help="file with one API key per line")
    h.add_argument("--metrics", action="store_true", help="serve Prometheus metrics at /metrics (501 otherwise)")
    h.add_argument("--metrics-no-auth", action="store_true", help="/metrics needs no API key even when keys are set")
    # Before --metrics-no-auth, /metrics was open unless this flag was given; now that is the default.
    h.add_argument("--metrics-key-required", action="store_true", help=argparse.SUPPRESS)
    h.add_argument("--slots", dest="slots", action="store_true", default=d.slots, help="serve /slots (the default)")
    h.add_argument("--no-slots", dest="slots", action="store_false", help="/slots answers 501")
    h.add_argument("--props", action="store_true", help="allow POST /props")
    h.add_argument("--slot-save-path", default="", metavar="DIR",
                   help="directory where POST /slots/{id}?action=save|restore keeps slot files (default: off)")
    h.add_argument("--webui", "--ui", dest="webui", action="store_true", default=d.webui,
                   help="chat UI at / (the default)")
    h.add_argument("--no-webui", "--no-ui", dest="webui", action="store_false", help="no chat UI at /")
    h.add_argument("--ui-config", "--webui-config", default=None, metavar="JSON",
                   help="the chat UI's default settings, a JSON object (/props ui_settings; e.g. "
                   '{"systemMessage": "...", "temperature": 0.2})')
    h.add_argument("--ui-config-file", "--webui-config-file", default=None, metavar="PATH",
                   help="a file with that JSON object")
    h.add_argument("--path", dest="static_path", default="", metavar="DIR",
                   help="serve DIR's files at / in place of the chat UI (an API route wins over a file)")
    h.add_argument("--ssl-keyfile", "--ssl-key-file", default="", help="PEM private key: serve HTTPS")
    h.add_argument("--ssl-certfile", "--ssl-cert-file", default="", help="PEM certificate (chain) that goes with it")
    h.add_argument("--max-body-size", type=int, default=d.max_body_size,
                   help="largest request body in bytes (a base64 media file takes 4/3 of its size)")
    h.add_argument("-to", "--timeout", type=float, default=d.timeout,
                   help="seconds a request's whole body may take before a 408, and its headers (at most 30); "
                        "a response the client reads nothing of for this long is ended")
    h.add_argument("--cors-origins", default=",".join(d.cors_origins),
                   help="comma-separated origins browsers may call from (default *: any; localhost: this machine's)")
    h.add_argument("--cors-methods", default=d.cors_methods, help="methods a CORS preflight allows")
    h.add_argument("--cors-headers", default=d.cors_headers, help="request headers a CORS preflight allows")
    h.add_argument("--cors-credentials", dest="cors_credentials", action="store_true", default=d.cors_credentials,
                   help="allow credentials (the default; with --cors-origins * the caller's origin is echoed)")
    h.add_argument("--no-cors-credentials", dest="cors_credentials", action="store_false",
                   help="refuse credentials on cross-origin requests")
    h.add_argument("--api-prefix", default="", help="serve every route under this path prefix instead (e.g. /llm)")
    h.add_argument(
        "--sse-ping-interval", type=float, default=d.sse_ping_interval,
        help="seconds without output before a stream sends an SSE ': ping' comment",
    )
    r = p.add_argument_group("router mode (several models, loaded on demand)")
    r.add_argument("--models-dir", default="", help="serve every GGUF model of this directory")
    r.add_argument("--models-preset", default="", help="INI file of models and their settings (llama-server's format)")
    r.add_argument("--models-max", type=int, default=d.models_max,
                   help="models loaded at once (0: no limit); loading one more unloads the least recently used "
                   "idle one")
    r.add_argument("--models-memory", type=_byte_size, default=d.models_memory, metavar="BYTES",
                   help="memory the loaded models may take, estimated from each GGUF (weights + KV cache); "
                        "K/M/G/T suffixes (powers of 1024); loading one more unloads the least recently used "
                        "idle ones to fit (0: no budget)")
    r.add_argument("--models-autoload", dest="models_autoload", action="store_true", default=d.models_autoload,
                   help="load a model when a request names it (the default)")
    r.add_argument("--no-models-autoload", dest="models_autoload", action="store_false",
                   help="a request for a model that is not loaded gets 503 (POST /models/load loads it)")
    r.add_argument("--sleep-idle-seconds", type=float, default=d.sleep_idle_seconds,
                   help="unload a model idle this long; the next request loads it again (-1: never)")
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
    o.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error", "critical"],
                   help=f"least important log lines shown ({d.log_level})")
    o.add_argument("-v", "--verbose", "--log-verbose", action="store_true", help="debug logs (--log-level debug)")
    o.add_argument("--log-format", default=d.log_format, choices=FORMATS, help="json: one JSON object per line")
    o.add_argument("--log-file", default="", help="append the logs of every process to this file (default: stderr)")
    o.add_argument("--log-prompts-dir", default="", metavar="PATH",
                   help="write each generation's prompt, as the model reads it, to a file in PATH (created if "
                   "missing; for debugging)")
    llama_server.add_log_flags(o)
    return p


_SIZE_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _names(value: str) -> list[str]:
    """A comma-separated list as llama-server keeps it: stripped, without empties or repeats, sorted."""
    return sorted({name.strip() for name in value.split(",")} - {""})


def _byte_size(value: str) -> int:
    """``4G``, ``512M``, ``1.5GiB``, ``1000000``: bytes (suffixes are powers of 1024, as in free -h)."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    number, suffix = (text[:-1], text[-1]) if text[-1:] in _SIZE_SUFFIXES else (text, "")
    try:
        size = float(number) * _SIZE_SUFFIXES[suffix]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 8G, 512M, 1073741824)") from None
    if not math.isfinite(size) or size < 0:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (a number of bytes, not negative)")
    return int(size)


def _files(value: str) -> list[ScaledFile]:
    return [ScaledFile(path) for path in value.split(",") if path]


def _scaled_files(value: str) -> list[ScaledFile]:
    files = []
    for item in (item for item in value.split(",") if item):
        path, _, scale = item.rpartition(":")
        try:
            files.append(ScaledFile(path, float(scale)))
        except ValueError:
            path = ""
        if not path or not math.isfinite(files[-1].scale):
            raise argparse.ArgumentTypeError(f"{item!r}: expected FNAME:SCALE")
    return files


# llama-server's sampling flags: (flags, SamplingParams field, type, help).
SAMPLING_FLAGS: list[tuple[tuple[str, ...], str, type, str]] = [
    (("--temp", "--temperature"), "temperature", float, "temperature (0.8; 0: greedy)"),
    (("--top-k",), "top_k", int, "top-k (40; 0: off)"),
    (("--top-p",), "top_p", float, "top-p (0.95; 1: off)"),
    (("--min-p",), "min_p", float, "min-p (0.05; 0: off)"),
    (("--typical", "--typical-p"), "typical_p", float, "locally typical p (1: off)"),
    (("--top-nsigma", "--top-n-sigma"), "top_n_sigma", float, "top-n-sigma (-1: off)"),
    (("--xtc-probability",), "xtc_probability", float, "XTC probability (0: off)"),
    (("--xtc-threshold",), "xtc_threshold", float, "XTC threshold (0.1)"),
    (("--repeat-penalty",), "repeat_penalty", float, "repetition penalty (1: off)"),
    (("--repeat-last-n",), "repeat_last_n", int, "tokens the penalties look back (64; -1: context)"),
    (("--presence-penalty",), "presence_penalty", float, "presence penalty (0: off)"),
    (("--frequency-penalty",), "frequency_penalty", float, "frequency penalty (0: off)"),
    (("--dry-multiplier",), "dry_multiplier", float, "DRY multiplier (0: off)"),
    (("--dry-base",), "dry_base", float, "DRY base (1.75)"),
    (("--dry-allowed-length",), "dry_allowed_length", int, "DRY allowed length (2)"),
    (("--dry-penalty-last-n",), "dry_penalty_last_n", int, "DRY look-back (64; 0: off)"),
    (("--dynatemp-range",), "dynatemp_range", float, "dynamic temperature range (0: off)"),
    (("--dynatemp-exp",), "dynatemp_exponent", float, "dynamic temperature exponent (1)"),
    (("--mirostat",), "mirostat", int, "Mirostat version (0: off, 1, 2)"),
    (("--mirostat-lr",), "mirostat_eta", float, "Mirostat learning rate eta (0.1)"),
    (("--mirostat-ent",), "mirostat_tau", float, "Mirostat target entropy tau (5)"),
    (("--adaptive-target",), "adaptive_target", float, "adaptive-p target (-1: off)"),
    (("--adaptive-decay",), "adaptive_decay", float, "adaptive-p decay (0.9)"),
]


def _sampling_flags(g: argparse._ArgumentGroup) -> None:
    for flags, field, type_, help_ in SAMPLING_FLAGS:
        g.add_argument(*flags, dest=f"sampling_{field}", type=type_, default=None, help=help_)
    g.add_argument("--dry-sequence-breaker", dest="sampling_dry_sequence_breakers", action="append", default=None,
                   help="DRY sequence breaker (repeatable; 'none': no breakers)")
    g.add_argument("--samplers", default="", help="sampler order, ';'-separated names (penalties;dry;top_k;...)")
    g.add_argument("--sampler-seq", "--sampling-seq", default="", help="sampler order as letters (e.g. edskypmxt)")
    g.add_argument("-n", "--n-predict", "--predict", dest="n_predict", type=int, default=-1,
                   help="output tokens of a request that sets no limit (-1: until the slot's context is full)")


def _speculative_flags(g: argparse._ArgumentGroup, d: ServeConfig) -> None:
    """llama-server's speculative decoding flags (each of its per-type n-gram flags sets the one
    n-gram setting ggserve has)."""
    g.add_argument("--spec-type", choices=["none", *SPEC_TYPES], default=d.spec_type or "none",
                   help="model-free drafting: ngram-simple (llama.cpp's: the last --spec-ngram-size-n tokens "
                   "matched earlier in prompt + output), ngram (ggserve's: the longest such match, down to 2 "
                   "tokens; ngram-mod, ngram-map-k and ngram-map-k4v run it too), draft-simple (a draft "
                   "model, -md)")
    g.add_argument("--spec-draft-n-max", "--draft", "--draft-n", "--draft-max", dest="spec_draft_n_max", type=int,
                   default=d.spec_draft_n_max, help="draft tokens per step at most (0: --spec-ngram-size-m)")
    g.add_argument("--spec-draft-n-min", "--draft-min", "--draft-n-min", "--spec-ngram-mod-n-min",
                   dest="spec_draft_n_min", type=int, default=d.spec_draft_n_min,
                   help="a shorter draft is not verified")
    g.add_argument("--spec-draft-p-min", "--draft-p-min", dest="spec_draft_p_min", type=float,
                   default=d.spec_draft_p_min, help="draft models: stop drafting below this probability")
    g.add_argument("--spec-ngram-size-n", "--spec-ngram-simple-size-n", "--spec-ngram-map-k-size-n",
                   "--spec-ngram-map-k4v-size-n", "--spec-ngram-mod-n-match", dest="spec_ngram_size_n", type=int,
                   default=d.spec_ngram_size_n, help="tokens of the match (ngram: at most)")
    g.add_argument("--spec-ngram-size-m", "--spec-ngram-simple-size-m", "--spec-ngram-map-k-size-m",
                   "--spec-ngram-map-k4v-size-m", "--spec-ngram-mod-n-max", dest="spec_ngram_size_m", type=int,
                   default=d.spec_ngram_size_m, help="tokens drafted after a match")
    g.add_argument("--spec-ngram-min-hits", "--spec-ngram-simple-min-hits", "--spec-ngram-map-k-min-hits",
                   "--spec-ngram-map-k4v-min-hits", dest="spec_ngram_min_hits", type=int,
                   default=d.spec_ngram_min_hits, help="earlier occurrences of the match needed to draft")
    g.add_argument("-md", "--spec-draft-model", "--model-draft", dest="spec_draft_model", default=d.spec_draft_model,
                   help="draft model with the target's vocabulary (--spec-type draft-simple, the default with it)")
    g.add_argument("-ngld", "--spec-draft-ngl", "--gpu-layers-draft", "--n-gpu-layers-draft", dest="spec_draft_ngl",
                   type=int, default=d.spec_draft_ngl, help="draft model layers on the GPU (-1: all)")
    g.add_argument("-devd", "--device-draft", "--spec-draft-device", default="", metavar="none",
                   help="'none': the draft model on no GPU")
    g.add_argument("-td", "--threads-draft", "--spec-draft-threads", dest="spec_draft_threads", type=int,
                   default=d.spec_draft_threads, metavar="N", help="the draft model's threads (default: -t)")
    g.add_argument("-tbd", "--threads-batch-draft", "--spec-draft-threads-batch", dest="spec_draft_threads_batch",
                   type=int, default=d.spec_draft_threads_batch, metavar="N",
                   help="the draft model's threads for batches (default: -td)")
    g.add_argument("-ctkd", "--cache-type-k-draft", "--spec-draft-type-k", dest="spec_draft_type_k",
                   choices=CACHE_TYPES, default=d.spec_draft_type_k, help="the draft model's KV cache type for K")
    g.add_argument("-ctvd", "--cache-type-v-draft", "--spec-draft-type-v", dest="spec_draft_type_v",
                   choices=CACHE_TYPES, default=d.spec_draft_type_v, help="and for V")
    cpu_placement.add_flags(g, draft=True)
    g.add_argument("--spec-default", action="store_true",
                   help="llama-server's default set-up: --spec-type ngram-mod with a 24-token match, drafts of "
                   "48 to 64 tokens (the flags given beside it win)")


def _proportions(text: str) -> list[float]:
    """-ts: numbers split at ',' or '/' (llama-server's forms)."""
    try:
        return [float(v) for v in text.replace("/", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"-ts {text!r}: proportions are numbers, e.g. 3,1") from None


def _vllm_aliases(group: argparse._ArgumentGroup) -> None:
    """vllm serve's flags for settings ggserve has under llama-server's names (the model may
    also come first, as ``vllm serve MODEL`` takes it)."""
    for flag, dest, type_, ours in (("--served-model-name", "aliases", _names, "-a"),
                                    ("--max-num-seqs", "n_parallel", int, "-np"),
                                    ("--max-model-len", "ctx_per_request", int, "--ctx-per-request"),
                                    ("--max-num-batched-tokens", "batch_size", int, "-b")):
        group.add_argument(flag, dest=dest, type=type_, default=argparse.SUPPRESS,
                           metavar="NAME,..." if dest == "aliases" else "N", help=f"as {ours}")


def standalone_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """A fresh ``ggserve`` parser (with the environment's defaults) and its ``serve`` parser."""
    parser = argparse.ArgumentParser(prog="ggserve")
    serve = serve_parser(parser.add_subparsers(dest="command", required=True))
    apply_env_defaults(serve)
    return parser, serve
