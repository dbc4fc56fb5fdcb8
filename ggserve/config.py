"""Server configuration: one msgspec Struct shared by every process of a run.

The launcher builds it from the command line, writes it as JSON into the run directory and hands
each child the path (``--config``); children read it back with ``load_config``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from ipc.transport import CurveKeys


# --spec-type values: llama.cpp's n-gram rule, ggserve's longest-match index (which also serves
# llama.cpp's other n-gram types), and a draft model (-md).
SPEC_TYPES = ("ngram-simple", "ngram", "ngram-mod", "ngram-map-k", "ngram-map-k4v", "draft-simple")
DRAFT_MODEL_TYPE = "draft-simple"  # the type that drafts with -md


# KV cache types (-ctk / -ctv and the draft's -ctkd / -ctvd), as llama-server names them
CACHE_TYPES = ("f32", "f16", "bf16", "iq4_nl", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


class ModelSpec(msgspec.Struct, kw_only=True):
    """One model of router mode (--models-dir, --models-preset)."""

    name: str  # the API's model id
    path: str  # the GGUF (first shard of a split)
    aliases: list[str] = []  # other names requests may give it (preset's alias)
    tags: list[str] = []  # preset's tags (informational)
    mmproj: str = ""  # its multimodal projector (the directory's mmproj*.gguf), loaded with it
    overrides: dict[str, Any] = {}  # ServeConfig fields this model sets differently (preset)
    args: list[str] = []  # those settings as flags, for /v1/models' status.args
    load_on_startup: bool = False  # preset's load-on-startup


class ScaledFile(msgspec.Struct):
    """A LoRA adapter (--lora FILE, --lora-scaled FILE:SCALE) or a control vector
    (--control-vector FILE, --control-vector-scaled FILE:SCALE) given at start."""

    path: str
    scale: float = 1.0  # its global scale at start


class CpuPlacement(msgspec.Struct, kw_only=True):
    """Where and how an executor's llama.cpp threads run (llama-server's -C, -Cr, --cpu-strict,
    --prio, --poll). llama.cpp runs steps of one token with one, steps of several (prompts, and
    decodes of several sequences) with the other (the -batch flags)."""

    cpus: list[int] = []  # CPUs the threads may run on; empty: those the process was given
    strict: bool = False  # each thread on its own CPU of ``cpus``, in order
    prio: int = 0  # -1 low, 0 normal, 1 medium, 2 high, 3 realtime (ggml_sched_priority)
    poll: int = 50  # 0-100: how long an idle thread polls for work (builds without OpenMP)

    @property
    def custom(self) -> bool:
        return self != CpuPlacement()


class TensorOverride(msgspec.Struct):
    """Weights whose names match ``pattern`` (a regex searched in the name) go to the named
    buffer type (llama-server's -ot, --cpu-moe, --n-cpu-moe, --n-cpu-ffn)."""

    pattern: str
    buffer_type: str  # a device's buffer type by its llama.cpp name: CPU, CUDA0, ...


class KvOverride(msgspec.Struct):
    """A GGUF metadata value replaced at load (llama-server's --override-kv KEY=TYPE:VALUE)."""

    key: str
    type: str  # int / float / bool / str
    value: int | float | bool | str


class RopeSettings(msgspec.Struct, kw_only=True):
    """RoPE and YaRN overrides (llama-server's --rope-* and --yarn-* flags); the defaults keep
    the GGUF's values (llama.cpp's own defaults)."""

    scaling: str = ""  # --rope-scaling: none / linear / yarn; "": the GGUF's
    freq_base: float = 0.0  # --rope-freq-base; 0: the GGUF's
    freq_scale: float = 0.0  # --rope-freq-scale (--rope-scale N sets 1/N); 0: the GGUF's
    yarn_orig_ctx: int = 0  # --yarn-orig-ctx: the model's training context; 0: the GGUF's
    yarn_ext_factor: float = -1.0  # --yarn-ext-factor (-1: llama.cpp's choice)
    yarn_attn_factor: float = -1.0  # --yarn-attn-factor
    yarn_beta_slow: float = -1.0  # --yarn-beta-slow
    yarn_beta_fast: float = -1.0  # --yarn-beta-fast


class ServeConfig(msgspec.Struct, kw_only=True):
    # model
    model: str  # path of the .gguf
    aliases: list[str] = []  # -a: names the API answers to, sorted; the first is the model id (default: the file name)
    tags: list[str] = []  # --tags: shown in /v1/models, sorted (informational)
    chat_template_file: str = ""
    chat_template: str = ""  # --chat-template: a built-in template by name (ggserve.chat_templates)
    chat_template_kwargs: dict[str, Any] = {}  # --chat-template-kwargs: extra template variables
    # embedding server (--embeddings, --reranking): /v1/embeddings, /v1/rerank; generation answers 501
    embeddings: bool = False
    pooling: str = ""  # --pooling: none / mean / cls / last / rank; "": the GGUF's
    embd_max_inputs: int = 2048  # --embd-max-inputs: inputs (or documents) of one request
    lora: list[ScaledFile] = []  # LoRA adapters every executor loads; their ids are their indexes here
    control_vectors: list[ScaledFile] = []  # summed, scaled, on every token's hidden state
    control_vector_layers: tuple[int, int] = (0, 0)  # --control-vector-layer-range START END (0: first / last)
    lora_init_without_apply: bool = False  # --lora-init-without-apply: every global scale starts at 0
    # multimodal input (images, audio): the projector every executor (and frontend worker) loads
    mmproj: str = ""  # --mmproj FILE
    # --image-min-tokens / --image-max-tokens: embeddings per image on models that resize pictures
    # to a token budget (Qwen2-VL and others; -1: the model's)
    image_tokens: tuple[int, int] = (-1, -1)
    mtmd_batch_max_tokens: int = 0  # --mtmd-batch-max-tokens: image embeddings encoded per batch (0: llama.cpp's)
    prefill_assistant: bool = True  # --no-prefill-assistant: a final assistant message is closed, not continued
    mmproj_offload: bool = True  # --no-mmproj-offload: the encoder runs on the CPU
    media_max_bytes: int = 20 * 1024 * 1024  # --media-max-bytes: largest image, audio or video file accepted
    media_path: str = ""  # --media-path: a directory file:// media URLs are read from (absolute; "": off)
    allow_remote_media: bool = False  # --allow-remote-media: image_url and video parts may be http(s), fetched
    media_fetch_timeout: float = 10.0  # --media-fetch-timeout: seconds a remote media fetch may take
    # video: decoded by the frontend with ffmpeg into frames sent as images (frontend.media.video)
    video_fps: float = 4.0  # --video-fps: frames sampled per second
    video_timestamp_interval: int = 5000  # --video-timestamp-interval: ms between timestamp texts (<= 0: none)
    video_ffmpeg_dir: str = ""  # --video-ffmpeg-dir: where ffmpeg is; "": PATH, then imageio-ffmpeg's
    video_max_frames: int = 64  # --video-max-frames: frames one video may give
    video_decode_timeout: float = 30.0  # --video-decode-timeout: seconds ffmpeg may take for one video
    # engine layout (llama-server flag names in comments)
    n_parallel: int = 4  # -np: slots per executor
    ctx_size: int = 4096  # -c: KV cells per executor, one pool shared by its slots
    ctx_per_request: int = 0  # tokens (prompt + output) one request may hold; 0: all of -c
    batch_size: int = 512  # -b: max tokens per decode step
    ubatch_size: int = 512  # -ub
    threads: int = 0  # -t: per executor; 0 = the cores split evenly between executors
    threads_batch: int = 0  # -tb: 0 = same as threads
    cpu: CpuPlacement = msgspec.field(default_factory=CpuPlacement)  # threads of one-token steps
    cpu_batch: CpuPlacement = msgspec.field(default_factory=CpuPlacement)  # of steps of several tokens (-Cb, -Crb, ...)
    n_gpu_layers: int = -1  # -ngl: -1 = all
    flash_attn: str = "auto"  # -fa: on / off / auto
    cache_type_k: str = "f16"  # -ctk
    cache_type_v: str = "f16"  # -ctv
    repack: bool = True  # --no-repack: CPU weight repacking (extra buffer types, incl. AMX)
    kv_offload: bool = True  # -nkvo: the KV cache (and attention) stays in host memory
    op_offload: bool = True  # --no-op-offload: host tensors' operations stay on the CPU
    check_tensors: bool = False  # --check-tensors: validate the weights while loading
    cpu_only: bool = False  # -dev none: llama.cpp uses no GPU or accelerator (models and KV in host memory)
    load_mode: str = "auto"  # -lm: how llama.cpp reads the weights (auto, none, mmap, mlock, mmap+mlock, dio)
    lazy_mode: str = "auto"  # -lzm: tensors read from disk on demand (auto, on, off)
    host_buffer: bool = True  # --no-host: no pinned host buffer, so the weights may take extra buffer types
    numa: str = ""  # --numa: distribute / isolate / numactl ("": off)
    warmup: bool = True  # --no-warmup: no warm-up decode (nor timed save) at start
    rope: RopeSettings = msgspec.field(default_factory=RopeSettings)
    tensor_overrides: list[TensorOverride] = []  # the first whose pattern matches a weight places it
    kv_overrides: list[KvOverride] = []  # --override-kv: for the executors' model and the frontend's vocabulary
    executors: int = 1  # data parallel executors (one per GPU; processes on CPU)
    gpus: list[str] = []  # CUDA devices: one per executor (or with split_mode, equal groups); empty: executor index
    # one executor over several GPUs (llama-server's flags; ggserve.gpu_groups lays them out)
    split_mode: str = "none"  # -sm: none (a GPU per executor) / layer / row / tensor
    main_gpu: int = 0  # -mg: the GPU (index among an executor's) for row splits' results and KV
    tensor_split: list[float] = []  # -ts: the model's proportions across an executor's GPUs
    max_queue: int = 256  # waiting requests beyond which new ones get 503
    step_timeout: float = 300.0  # seconds one step may take before its executor counts as hung
    prefix_cache: bool = True
    cache_ram: int = 8192  # MiB of host memory for prefixes evicted from the KV cache; -1: no limit, 0: off
    context_shift: bool = False  # --context-shift: a generation that fills its context drops part of it
    n_keep: int = 0  # --keep: prompt tokens a context shift keeps (-1: all), when a request sets no n_keep
    cache_reuse: int = 0  # --cache-reuse: min chunk of a cached prompt reused by KV shifting (0: off)
    async_scheduling: bool = True  # plan a decode step before the running one's result (--no-async-scheduling)
    backend_sampling: bool = False  # -bs: greedy sequences take their argmax on the model's device
    # speculative decoding (llama-server's flags): --spec-type ngram-simple / ngram ("": off)
    spec_type: str = ""
    spec_draft_n_max: int = 0  # --spec-draft-n-max: draft tokens per step at most (0: the type's: --spec-ngram-size-m, 16 with -md)
    spec_draft_n_min: int = 0  # --spec-draft-n-min: a shorter draft is not verified
    spec_draft_p_min: float = 0.0  # --spec-draft-p-min: draft models only
    spec_draft_model: str = ""  # -md: the draft model's GGUF (--spec-type draft-simple)
    spec_draft_ngl: int = -1  # -ngld: draft model layers on the GPU (-1: all)
    spec_draft_cpu_only: bool = False  # -devd none: the draft model on no GPU
    spec_draft_threads: int = 0  # -td: the draft's threads (0: the target's)
    spec_draft_threads_batch: int = 0  # -tbd: its threads for batches (0: its -td)
    spec_draft_type_k: str = "f16"  # -ctkd: the draft's KV cache types
    spec_draft_type_v: str = "f16"  # -ctvd
    spec_draft_cpu: CpuPlacement = msgspec.field(default_factory=CpuPlacement)  # -Cd, --prio-draft, ...
    spec_draft_cpu_batch: CpuPlacement = msgspec.field(default_factory=CpuPlacement)  # -Cbd, -Crbd, ...
    spec_draft_tensor_overrides: list[TensorOverride] = []  # -otd, -cmoed, -ncmoed
    spec_ngram_size_n: int = 12  # --spec-ngram-size-n: tokens matched (ngram: the longest match, down to 2)
    spec_ngram_size_m: int = 48  # --spec-ngram-size-m: tokens drafted after a match
    spec_ngram_min_hits: int = 1  # --spec-ngram-min-hits: earlier occurrences a match needs
    seed: int = -1  # default sampling seed (-1: random)
    reasoning_format: str = "auto"  # --reasoning-format: none / deepseek / deepseek-legacy / auto
    skip_chat_parsing: bool = False  # --skip-chat-parsing: replies are all content (no reasoning or calls parsed)
    # server-wide sampling defaults (--temp, --top-k, ...): SamplingParams field -> value
    sampling: dict[str, float | int | list[str]] = {}
    n_predict: int = -1  # -n: output limit of a request that sets none (-1: the slot's context)
    # server-wide output defaults (ggserve.flags.output): for requests that leave the field out
    ignore_eos: bool = False  # --ignore-eos
    stop: list[str] = []  # -r: stop strings of requests that give none
    logit_bias: list[str] = []  # -l values as given (TOKEN_ID(+/-)BIAS; JSON has no -inf to hold a ban)
    grammar: str = ""  # --grammar / --grammar-file: GBNF
    json_schema: str = ""  # -j / -jf: a JSON schema's text
    special: bool = False  # -sp: replies write control tokens (EOS, turn markers) as their text
    spm_infill: bool = False  # --spm-infill: fill-in-the-middle prompts put the suffix first
    embd_normalize: int = 2  # --embd-normalize: embeddings' norm for requests that set none (-1: none, 2: L2)
    reasoning_budget: int = -1  # --reasoning-budget: thinking tokens before the closing tag is forced
    reasoning_budget_message: str = ""  # --reasoning-budget-message: text forced before the closing tag
    # http
    host: str = "127.0.0.1"
    port: int = 8080
    http_workers: int = 1
    api_keys: list[str] = []
    metrics: bool = False  # --metrics: serve /metrics (501 otherwise, as llama-server)
    metrics_no_auth: bool = False  # /metrics without an API key even when keys are set
    slots: bool = True  # --no-slots: /slots answers 501
    props: bool = False  # --props: POST /props is allowed
    slot_save_path: str = ""  # --slot-save-path: directory of slot files (POST /slots/{id}); "": 501
    webui: bool = True  # --no-webui: / answers 404
    ui_settings: str = ""  # --ui-config / --ui-config-file: a JSON object, /props' ui_settings (the UI's defaults)
    static_path: str = ""  # --path: a directory whose files are served at / (in place of the web UI)
    ssl_keyfile: str = ""
    ssl_certfile: str = ""
    # a request body: room for a --media-max-bytes file in base64 (4/3 of it) and the rest
    max_body_size: int = 32 * 1024 * 1024
    timeout: float = 600.0  # --timeout: s a request's headers (at most 30) or whole body may take; then 408
    sse_ping_interval: float = 5.0  # seconds without output before a stream sends ": ping"
    cors_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])  # --cors-origins: origins browsers may call from ("*": any)
    cors_methods: str = "GET, POST, DELETE, OPTIONS"  # --cors-methods: a preflight's Access-Control-Allow-Methods
    cors_headers: str = "*"  # --cors-headers: a preflight's Access-Control-Allow-Headers
    cors_credentials: bool = True  # --no-cors-credentials: refuse credentials (and answer "*" to any origin)
    api_prefix: str = ""  # --api-prefix: every route is served under this path prefix instead
    # operations
    shutdown_timeout: float = 30.0  # seconds running requests may take to finish on SIGTERM
    max_restarts: int = 5  # failures of one process within RESTART_WINDOW_S before giving up
    # router mode: several models, each its own engine, loaded on demand
    models: list[ModelSpec] = []  # --models-dir / --models-preset; empty: one model (-m)
    models_max: int = 4  # --models-max: loaded at once (0: no limit); the least recently used idle one goes
    models_memory: int = 0  # --models-memory: bytes the loaded models may take (estimated; 0: no budget)
    models_autoload: bool = True  # --no-models-autoload: a request for an unloaded model is a 503
    sleep_idle_seconds: float = -1  # --sleep-idle-seconds: unload a model idle this long (-1: never)
    models_single: bool = False  # the -m model run as a router of one (--sleep-idle-seconds): any name is it
    models_endpoint: str = ""  # the launcher's model table socket (router mode; set by the launcher)
    model_name: str = ""  # router mode: the model of this engine's processes (names them in the logs)
    # plumbing
    run_dir: str = ""
    scheduler_endpoint: str = ""
    executor_endpoint: str = ""
    curve: CurveKeys | None = None  # made by the launcher when an endpoint is tcp://
    log_level: str = "info"  # --verbose: debug
    log_format: str = "text"  # text / json (one object per line)
    log_file: str = ""  # every process appends here instead of stderr
    log_prompts_dir: str = ""  # --log-prompts-dir: each generation's prompt in a file there

    @property
    def model_alias(self) -> str:
        return self.aliases[0] if self.aliases else Path(self.model).name

    @property
    def router(self) -> bool:
        return bool(self.models)

    @property
    def lora_scales(self) -> list[float]:
        """The global scale of each LoRA adapter at start."""
        return [0.0 if self.lora_init_without_apply else lora.scale for lora in self.lora]

    @property
    def n_threads(self) -> int:
        """Threads per executor. By default the cores are split between executors: llama.cpp's
        threads spin at barriers, so executors sharing cores slow each other down many times."""
        if self.threads > 0:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.executors)


CONFIG_FILE = "config.json"


def save_config(cfg: ServeConfig) -> str:
    """Write the configuration for the children; readable by this user only (it holds API keys
    and CURVE secret keys)."""
    path = os.path.join(cfg.run_dir, CONFIG_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(cfg))
    return path


def load_config(path: str) -> ServeConfig:
    with open(path, "rb") as f:
        return msgspec.json.decode(f.read(), type=ServeConfig)


def cpu_has_amx() -> bool:
    """llama.cpp's AMX kernels (picked with weight repacking) segfault where the hypervisor does
    not expose AMX tile state, as on this project's CI VMs: repacking defaults to off there."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return " amx_tile" in f.read()
    except OSError:
        return False
