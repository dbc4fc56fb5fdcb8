"""Command-line flags from environment variables, as llama-server's containers set them.

Every ``ggserve serve`` flag can come from the environment: llama-server's ``LLAMA_ARG_*`` name
where it has one (``LLAMA_ARG_CTX_SIZE``, ``LLAMA_API_KEY``, ...), otherwise ``GGSERVE_`` and the
long flag's name (``GGSERVE_MAX_QUEUE`` for ``--max-queue``). A flag on the command line wins over
its variable, as in llama-server. A variable's value is checked as the flag's would be: a bad one
is a usage error naming the variable.
"""

from __future__ import annotations

import argparse
import os

# llama-server's variable names for the flags both servers have (common/arg.cpp's set_env).
LLAMA_ENV = {
    "--model": "LLAMA_ARG_MODEL",
    "--alias": "LLAMA_ARG_ALIAS",
    "--tags": "LLAMA_ARG_TAGS",
    "--ctx-size": "LLAMA_ARG_CTX_SIZE",
    "--parallel": "LLAMA_ARG_N_PARALLEL",
    "--batch-size": "LLAMA_ARG_BATCH",
    "--ubatch-size": "LLAMA_ARG_UBATCH",
    "--threads": "LLAMA_ARG_THREADS",
    "--n-gpu-layers": "LLAMA_ARG_N_GPU_LAYERS",
    "--flash-attn": "LLAMA_ARG_FLASH_ATTN",
    "--cache-type-k": "LLAMA_ARG_CACHE_TYPE_K",
    "--cache-type-v": "LLAMA_ARG_CACHE_TYPE_V",
    "--host": "LLAMA_ARG_HOST",
    "--port": "LLAMA_ARG_PORT",
    "--api-key": "LLAMA_API_KEY",
    "--api-key-file": "LLAMA_ARG_API_KEY_FILE",
    "--ssl-keyfile": "LLAMA_ARG_SSL_KEY_FILE",
    "--ssl-certfile": "LLAMA_ARG_SSL_CERT_FILE",
    "--cors-origins": "LLAMA_ARG_CORS_ORIGINS",
    "--cors-methods": "LLAMA_ARG_CORS_METHODS",
    "--cors-headers": "LLAMA_ARG_CORS_HEADERS",
    "--cors-credentials": "LLAMA_ARG_CORS_CREDENTIALS",
    "--timeout": "LLAMA_ARG_TIMEOUT",
    "--api-prefix": "LLAMA_ARG_API_PREFIX",
    "--path": "LLAMA_ARG_STATIC_PATH",
    "--chat-template": "LLAMA_ARG_CHAT_TEMPLATE",
    "--chat-template-file": "LLAMA_ARG_CHAT_TEMPLATE_FILE",
    "--chat-template-kwargs": "LLAMA_ARG_CHAT_TEMPLATE_KWARGS",
    "--reasoning-format": "LLAMA_ARG_THINK",
    "--n-predict": "LLAMA_ARG_N_PREDICT",
    "--context-shift": "LLAMA_ARG_CONTEXT_SHIFT",
    "--backend-sampling": "LLAMA_ARG_BACKEND_SAMPLING",
    "--cache-reuse": "LLAMA_ARG_CACHE_REUSE",
    "--embeddings": "LLAMA_ARG_EMBEDDINGS",
    "--mmproj": "LLAMA_ARG_MMPROJ",
    "--mmproj-offload": "LLAMA_ARG_MMPROJ_OFFLOAD",
    "--mmproj-device": "MTMD_BACKEND_DEVICE",
    "--video-fps": "LLAMA_ARG_VIDEO_FPS",
    "--video-timestamp-interval": "LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL",
    "--video-ffmpeg-dir": "LLAMA_ARG_VIDEO_FFMPEG_DIR",
    "--reranking": "LLAMA_ARG_RERANKING",
    "--pooling": "LLAMA_ARG_POOLING",
    "--temp": "LLAMA_ARG_TEMPERATURE",
    "--top-k": "LLAMA_ARG_TOP_K",
    "--top-p": "LLAMA_ARG_TOP_P",
    "--min-p": "LLAMA_ARG_MIN_P",
    "--repeat-penalty": "LLAMA_ARG_REPEAT_PENALTY",
    "--presence-penalty": "LLAMA_ARG_PRESENCE_PENALTY",
    "--frequency-penalty": "LLAMA_ARG_FREQUENCY_PENALTY",
    "--models-dir": "LLAMA_ARG_MODELS_DIR",
    "--models-preset": "LLAMA_ARG_MODELS_PRESET",
    "--models-max": "LLAMA_ARG_MODELS_MAX",
    "--models-autoload": "LLAMA_ARG_MODELS_AUTOLOAD",
    "--webui": "LLAMA_ARG_UI",
    "--cache-prompt": "LLAMA_ARG_CACHE_PROMPT",
    "--kv-offload": "LLAMA_ARG_KV_OFFLOAD",
    "--numa": "LLAMA_ARG_NUMA",
    "--device": "LLAMA_ARG_DEVICE",
    "--reasoning-preserve": "LLAMA_ARG_REASONING_PRESERVE",
    "--ui-config": "LLAMA_ARG_UI_CONFIG",
    "--ui-config-file": "LLAMA_ARG_UI_CONFIG_FILE",
    "--load-mode": "LLAMA_ARG_LOAD_MODE",
    "--lazy-mode": "LLAMA_ARG_LAZY_MODE",
    "--prefill-assistant": "LLAMA_ARG_PREFILL_ASSISTANT",
    "--cache-idle-slots": "LLAMA_ARG_CACHE_IDLE_SLOTS",
    "--mtmd-batch-max-tokens": "LLAMA_ARG_MTMD_BATCH_MAX_TOKENS",
    "--mmproj-auto": "LLAMA_ARG_MMPROJ_AUTO",
    "--ctx-checkpoints": "LLAMA_ARG_CTX_CHECKPOINTS",
    "--image-min-tokens": "LLAMA_ARG_IMAGE_MIN_TOKENS",
    "--image-max-tokens": "LLAMA_ARG_IMAGE_MAX_TOKENS",
    "--split-mode": "LLAMA_ARG_SPLIT_MODE",
    "--tensor-split": "LLAMA_ARG_TENSOR_SPLIT",
    "--main-gpu": "LLAMA_ARG_MAIN_GPU",
    "--kv-unified-per-slot": "LLAMA_ARG_KV_UNIFIED_PER_SLOT",
    "--no-host": "LLAMA_ARG_NO_HOST",
    "--rope-scaling": "LLAMA_ARG_ROPE_SCALING_TYPE",
    "--rope-scale": "LLAMA_ARG_ROPE_SCALE",
    "--rope-freq-base": "LLAMA_ARG_ROPE_FREQ_BASE",
    "--rope-freq-scale": "LLAMA_ARG_ROPE_FREQ_SCALE",
    "--yarn-orig-ctx": "LLAMA_ARG_YARN_ORIG_CTX",
    "--yarn-ext-factor": "LLAMA_ARG_YARN_EXT_FACTOR",
    "--yarn-attn-factor": "LLAMA_ARG_YARN_ATTN_FACTOR",
    "--yarn-beta-slow": "LLAMA_ARG_YARN_BETA_SLOW",
    "--yarn-beta-fast": "LLAMA_ARG_YARN_BETA_FAST",
    "--jinja": "LLAMA_ARG_JINJA",
    "--cont-batching": "LLAMA_ARG_CONT_BATCHING",
    "--kv-unified": "LLAMA_ARG_KV_UNIFIED",
    "--threads-http": "LLAMA_ARG_THREADS_HTTP",
    "--defrag-thold": "LLAMA_ARG_DEFRAG_THOLD",
    "--hf-repo": "LLAMA_ARG_HF_REPO",
    "--override-tensor": "LLAMA_ARG_OVERRIDE_TENSOR",
    "--cpu-moe": "LLAMA_ARG_CPU_MOE",
    "--n-cpu-moe": "LLAMA_ARG_N_CPU_MOE",
    "--spec-draft-cpu-moe": "LLAMA_ARG_SPEC_DRAFT_CPU_MOE",
    "--spec-draft-n-cpu-moe": "LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE",
    "--n-cpu-ffn": "LLAMA_ARG_N_CPU_FFN",
    "--log-jsonl": "LLAMA_ARG_LOG_JSONL",
    "--log-colors": "LLAMA_ARG_LOG_COLORS",
    "--log-prefix": "LLAMA_ARG_LOG_PREFIX",
    "--log-timestamps": "LLAMA_ARG_LOG_TIMESTAMPS",
    "--offline": "LLAMA_ARG_OFFLINE",
    "--reasoning": "LLAMA_ARG_REASONING",
    "--reasoning-effort": "LLAMA_ARG_REASONING_EFFORT",
    "--log-file": "LLAMA_ARG_LOG_FILE",
    "--fit": "LLAMA_ARG_FIT",
    "--fit-target": "LLAMA_ARG_FIT_TARGET",
    "--fit-ctx": "LLAMA_ARG_FIT_CTX",
    "--rpc": "LLAMA_ARG_RPC",
    "--reuse-port": "LLAMA_ARG_REUSE_PORT",
    "--spec-draft-p-split": "LLAMA_ARG_SPEC_DRAFT_P_SPLIT",
    "--spec-draft-backend-sampling": "LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING",
}
_TRUE = {"1", "true", "on", "yes", "enabled"}
_FALSE = {"0", "false", "off", "no", "disabled"}


def env_name(action: argparse.Action) -> str | None:
    """The variable of a flag: llama-server's, else GGSERVE_ + its first long name."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs:
        return None
    for flag in longs:
        if flag in LLAMA_ENV:
            return LLAMA_ENV[flag]
    return "GGSERVE_" + longs[0][2:].replace("-", "_").upper()


def apply_env_defaults(parser: argparse.ArgumentParser, environ: dict[str, str] | None = None) -> None:
    """Turn the environment's values into the parser's defaults (the command line still wins)."""
    environ = dict(os.environ) if environ is None else environ
    for action in parser._actions:
        name = env_name(action)
        if name is None or name not in environ or isinstance(action, argparse._HelpAction):
            continue
        raw = environ[name]
        if action.nargs == 0:  # a switch: store_true / store_false / store_const
            value = raw.strip().lower()
            if value not in _TRUE | _FALSE:
                parser.error(f"{name}={raw!r}: expected one of {sorted(_TRUE | _FALSE)}")
            # On the parser: a switch pair (--webui / --no-webui) shares one destination.
            if value in _TRUE and isinstance(action.const, list):  # a switch adding to a list (--cpu-moe)
                parser.set_defaults(**{action.dest: [*parser.get_default(action.dest), *action.const]})
            elif value in _TRUE:
                parser.set_defaults(**{action.dest: action.const})
            elif isinstance(action.const, bool):
                parser.set_defaults(**{action.dest: not action.const})
            continue
        try:
            value = action.type(raw) if callable(action.type) else raw
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            parser.error(f"{name}={raw!r} is not a valid value for {action.option_strings[-1]}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"{name}={raw!r}: choose from {', '.join(map(str, action.choices))}")
        if isinstance(action, argparse._ExtendAction) or (isinstance(value, list) and
                                                          isinstance(parser.get_default(action.dest), list)):
            # Its type gives a list, and flags extending one list share it (--lora, --lora-scaled; -ot,
            # --n-cpu-moe).
            parser.set_defaults(**{action.dest: [*parser.get_default(action.dest), *value]})
        else:
            action.default = [value] if isinstance(action, argparse._AppendAction) else value
