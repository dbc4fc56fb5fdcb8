"""llama-server flags beyond ggserve's own design: llama.cpp's model and context settings
(RoPE / YaRN, KV and op offload, tensor checks, NUMA, warm-up), the flags that ask for what
ggserve always does (accepted), and those it has no counterpart for (a usage error saying why,
or a warning for tuning knobs whose mechanism ggserve lacks, as llama.cpp itself warns of its
deprecated ones). An unknown flag stays argparse's usage error.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from ggserve.config import KvOverride, RopeSettings, TensorOverride
from ggserve.llama import kv_overrides

log = logging.getLogger("ggserve")

NUMA_STRATEGIES = ("distribute", "isolate", "numactl")
LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
MOE_EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"  # a MoE layer's expert weights
DENSE_FFN = r"\.ffn_(up|down|gate)\."  # a dense layer's feed-forward weights
CPU_BUFFER = "CPU"
# flags that ask for downloads: ggserve loads local files only
DOWNLOAD_FLAGS = ("-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-hfd", "-hfrd", "--hf-repo-draft",
                  "--spec-draft-hf", "-mu", "--model-url", "-dr", "--docker-repo", "-mmu", "--mmproj-url")
# switches that pick a model to download (llama-server's presets), or list what it downloaded
DOWNLOAD_SWITCHES = ("--embd-gemma-default", "--fim-qwen-1.5b-default", "--fim-qwen-3b-default",
                     "--fim-qwen-7b-default", "--fim-qwen-7b-spec", "--fim-qwen-14b-spec", "--fim-qwen-30b-default",
                     "--gpt-oss-20b-default", "--gpt-oss-120b-default", "--vision-gemma-4b-default",
                     "--vision-gemma-12b-default", "-cl", "--cache-list")
NO_FIT = "ggserve does not fit -ngl and -c to the devices' memory: they apply as given (-ngl: all layers)"
# flags whose mechanism ggserve does not have: (names, dest, value type, why); a value is accepted
# with a warning
TUNING_WITHOUT_EFFECT = (
    (("--threads-http",), "threads_http", float,
     "ggserve's HTTP frontend is asynchronous; --http-workers N runs N worker processes"),
    (("-dt", "--defrag-thold"), "defrag_thold", float, "deprecated in llama.cpp, which ignores it too"),
    (("-sps", "--slot-prompt-similarity"), "slot_prompt_similarity", float,
     "ggserve gives a request the slot holding the longest cached prefix of its prompt"),
    (("-ctxcp", "--ctx-checkpoints", "--swa-checkpoints"), "ctx_checkpoints", float,
     "ggserve keeps sliding-window prefixes reusable without llama.cpp's context checkpoints"),
    (("-cms", "--checkpoint-min-step"), "checkpoint_min_step", float,
     "ggserve keeps sliding-window prefixes reusable without llama.cpp's context checkpoints"),
    (("-fitt", "--fit-target"), "fit_target", str, NO_FIT),
    (("-fitc", "--fit-ctx"), "fit_ctx", int, NO_FIT),
    (("--spec-draft-p-split", "--draft-p-split"), "spec_draft_p_split", float,
     "llama.cpp's speculative decoding does not read it either"),
    (("-hft", "--hf-token"), "hf_token", str, "ggserve downloads nothing"),
)
# switches of the same kind
SWITCHES_WITHOUT_EFFECT = (
    (("--swa-full",), "swa_full",
     "ggserve's prefix cache reuses prefixes on sliding-window models without a full-size window cache"),
    (("--perf",), "perf", "ggserve times every request itself (timings, /metrics); llama.cpp's counters stay off"),
    (("-e", "--escape", "--no-escape"), "escape", "llama-server ignores it too: request text arrives as JSON strings"),
    (("--no-cache-idle-slots",), "no_cache_idle_slots",
     "ggserve keeps idle slots' prefixes cached (in the KV cache, then in --cache-ram when evicted)"),
    (("--spec-draft-backend-sampling", "--no-spec-draft-backend-sampling"), "spec_draft_backend_sampling",
     "ggserve's draft model takes its greedy picks from its logits in the executor"),
)
NO_LOOKUP_CACHE = ("ggserve has no ngram-cache drafting from lookup cache files (--spec-type ngram drafts from the "
                   "prompt and the output)")
NO_SYNTHETIC_DRAFTS = "synthetic draft acceptance benchmarks llama.cpp's verifier; ggserve verifies real drafts only"
# flags of llama-server features ggserve does not have: (names, takes a value, why); a usage error
UNSUPPORTED = (
    (("--rpc",), True, "ggserve runs its executors on this machine's devices (no llama.cpp RPC backend)"),
    (("--reuse-port",), False, "granian cannot share its port with other processes; --http-workers N runs N HTTP "
     "processes on one port"),
    (("--tools",), True, "ggserve has no built-in tools for agents"),
    (("--tools-runtime",), True, "ggserve has no built-in tools for agents"),
    (("-ag", "--agent"), False, "ggserve has no built-in tools for agents or CORS proxy"),
    (("--mcp-servers-config", "--mcp-servers-json"), True, "ggserve's chat page has no MCP client"),
    (("--webui-mcp-proxy", "--ui-mcp-proxy"), False, "ggserve's chat page has no MCP proxy"),
    (("-lcs", "--lookup-cache-static"), True, NO_LOOKUP_CACHE),
    (("-lcd", "--lookup-cache-dynamic"), True, NO_LOOKUP_CACHE),
    (("--spec-synth-len",), True, NO_SYNTHETIC_DRAFTS),
    (("--spec-synth-rates",), True, NO_SYNTHETIC_DRAFTS),
)
# their off switches: what ggserve does
UNSUPPORTED_OFF = ("-no-ag", "--no-agent", "--no-webui-mcp-proxy", "--no-ui-mcp-proxy")


class _ListDevices(argparse.Action):
    """--list-devices: llama-server's listing, then exit (as --version does)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from ggserve.llama.devices import listing  # loads llama.cpp: only when asked

        print(listing())
        parser.exit()


def cpu_only(value: str, flag: str) -> bool:
    """-dev (or -devd): True for "none" (no GPU), False without it (llama.cpp's devices);
    ValueError for names."""
    if value in ("", "none"):
        return value == "none"
    from ggserve.llama.devices import devices

    names = [d.name for d in devices()]
    unknown = [name for name in value.split(",") if name not in names]
    if unknown:
        raise ValueError(f"{flag}: invalid device {unknown[0]} (llama.cpp finds: {', '.join(names) or 'none'})")
    raise ValueError(f"{flag}: ggserve runs one executor per GPU and places them with --gpus (CUDA indices); "
                     f"{flag} takes 'none' (no GPU)")


def _overrides(text: str) -> list[TensorOverride]:
    """-ot's ``PATTERN=BUFFER_TYPE,...``."""
    out = []
    for item in text.split(","):
        pattern, eq, buffer_type = item.rpartition("=")
        if not eq or not pattern or not buffer_type:
            raise argparse.ArgumentTypeError(f"{item!r} is not <tensor name pattern>=<buffer type>")
        out.append(TensorOverride(pattern, buffer_type))
    return out


def _first_layers(regex: str) -> Callable[[str], list[TensorOverride]]:
    """--n-cpu-moe / --n-cpu-ffn N: the weights of layers 0 to N-1 on the CPU."""
    def parse(text: str) -> list[TensorOverride]:
        n = int(text)
        if n < 0:
            raise argparse.ArgumentTypeError(f"{text} is not a number of layers")
        return [TensorOverride(rf"blk\.{i}{regex}", CPU_BUFFER) for i in range(n)]
    return parse


def _kv_overrides(text: str) -> list[KvOverride]:
    try:
        return kv_overrides.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _ExtendInOrder(argparse.Action):
    """Each flag adds its overrides to one list, in command-line order (the first match wins)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        added = self.const if self.nargs == 0 else values
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), *added])


def _tensor_override_flags(e: argparse._ArgumentGroup, draft: bool) -> None:
    """-ot, -cmoe, -ncmoe, or with ``draft`` the draft model's -otd, -cmoed, -ncmoed."""
    dest, whose = ("spec_draft_tensor_overrides", "the draft model's ") if draft else ("tensor_overrides", "")
    names = {
        "ot": ("--spec-draft-override-tensor", "-otd", "--override-tensor-draft") if draft else
              ("-ot", "--override-tensor"),
        "cmoe": ("--spec-draft-cpu-moe", "-cmoed", "--cpu-moe-draft") if draft else ("-cmoe", "--cpu-moe"),
        "ncmoe": ("--spec-draft-n-cpu-moe", "--spec-draft-ncmoe", "-ncmoed", "--n-cpu-moe-draft") if draft else
                 ("-ncmoe", "--n-cpu-moe"),
    }
    e.add_argument(*names["ot"], dest=dest, action=_ExtendInOrder, default=[], type=_overrides,
                   metavar="PATTERN=TYPE,...", help=f"{whose}weights whose names match a regex go to a buffer type "
                   "(CPU, CUDA0, ...; the first match wins)")
    e.add_argument(*names["cmoe"], dest=dest, action=_ExtendInOrder, nargs=0,
                   const=[TensorOverride(MOE_EXPERTS, CPU_BUFFER)],
                   help=f"{whose}Mixture-of-Experts layers' expert weights stay on the CPU")
    e.add_argument(*names["ncmoe"], dest=dest, action=_ExtendInOrder, type=_first_layers(MOE_EXPERTS),
                   metavar="N", help=f"the expert weights of {whose}first N layers stay on the CPU")


def _unsupported_dest(names: tuple[str, ...]) -> str:
    return "unsupported_" + names[-1].lstrip("-").replace("-", "_")


def add_flags(e: argparse._ArgumentGroup, c: argparse._ArgumentGroup) -> None:
    """``e``: the engine group (llama.cpp settings); ``c``: llama-server compatibility."""
    e.add_argument("-kvo", "--kv-offload", dest="kv_offload", action="store_true", default=True,
                   help="the KV cache and attention on the GPU with the layers (the default)")
    e.add_argument("-nkvo", "--no-kv-offload", dest="kv_offload", action="store_false",
                   help="the KV cache and attention in host memory, on the CPU")
    e.add_argument("--op-offload", dest="op_offload", action="store_true", default=True,
                   help="operations on weights in host memory may run on the GPU (the default)")
    e.add_argument("--no-op-offload", dest="op_offload", action="store_false",
                   help="such operations stay on the CPU")
    e.add_argument("--check-tensors", action="store_true", help="validate the weights while loading")
    e.add_argument("-dev", "--device", default="", metavar="none",
                   help="'none': llama.cpp uses no GPU or accelerator (ggserve places executors on GPUs with --gpus)")
    e.add_argument("--list-devices", action=_ListDevices,
                   help="print the GPUs and accelerators llama.cpp finds, and exit")
    e.add_argument("-lm", "--load-mode", choices=LOAD_MODES, default="auto",
                   help="how llama.cpp reads the weights: auto (mmap unless a device cannot), none, mmap, mlock "
                   "(kept in RAM), mmap+mlock, dio (direct I/O)")
    e.add_argument("-lzm", "--lazy-mode", choices=("auto", "on", "off"), default="auto",
                   help="read the rows of tensors the architecture marks (per-layer embeddings) from disk on "
                   "demand: on, auto (those over 4 GiB), off")
    e.add_argument("--no-host", dest="host_buffer", action="store_false",
                   help="no pinned host buffer for the weights, so that extra buffer types may take them")
    e.add_argument("--override-kv", dest="kv_overrides", action=_ExtendInOrder, default=[], type=_kv_overrides,
                   metavar="KEY=TYPE:VALUE,...", help="replace GGUF metadata values at load (TYPE: int, float, "
                   "bool, str), for the model and the frontend's vocabulary alike")
    for draft in (False, True):
        _tensor_override_flags(e, draft)
    e.add_argument("-ncffn", "--n-cpu-ffn", dest="tensor_overrides", action=_ExtendInOrder,
                   type=_first_layers(DENSE_FFN), metavar="N",
                   help="the dense feed-forward weights of the first N layers stay on the CPU")
    e.add_argument("--numa", choices=NUMA_STRATEGIES, default="",
                   help="llama.cpp's NUMA placement of its threads (default: none)")
    e.add_argument("--warmup", dest="warmup", action="store_true", default=True,
                   help="one decode at start, before the first request (the default)")
    e.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="no warm-up decode (the first request pays for it; a GPU's first save to "
                   "--cache-ram is not timed in advance either)")
    d = RopeSettings()
    e.add_argument("--rope-scaling", dest="rope_scaling", choices=["none", "linear", "yarn"], default=d.scaling,
                   help="RoPE scaling method (default: the model's)")
    e.add_argument("--rope-scale", type=float, default=None, metavar="N",
                   help="context scaling factor: --rope-freq-scale 1/N")
    e.add_argument("--rope-freq-base", type=float, default=d.freq_base, metavar="N",
                   help="RoPE base frequency (default: the model's)")
    e.add_argument("--rope-freq-scale", type=float, default=d.freq_scale, metavar="N",
                   help="RoPE frequency scaling factor: the context grows by 1/N (default: the model's)")
    e.add_argument("--yarn-orig-ctx", type=int, default=d.yarn_orig_ctx, metavar="N",
                   help="YaRN: the model's training context (default: the model's)")
    for name, value in (("ext-factor", d.yarn_ext_factor), ("attn-factor", d.yarn_attn_factor),
                        ("beta-slow", d.yarn_beta_slow), ("beta-fast", d.yarn_beta_fast)):
        e.add_argument(f"--yarn-{name}", type=float, default=value, metavar="N",
                       help=f"YaRN {name.replace('-', ' ')} (default: {value:g}, llama.cpp's choice)")
    # what ggserve always does
    c.add_argument("--jinja", dest="jinja", action="store_true", default=True,
                   help="chat templates are rendered with Jinja (always)")
    c.add_argument("--no-jinja", dest="jinja", action="store_false", help=argparse.SUPPRESS)
    c.add_argument("-cb", "--cont-batching", dest="cont_batching", action="store_true", default=True,
                   help="continuous batching (always)")
    c.add_argument("-nocb", "--no-cont-batching", dest="cont_batching", action="store_false",
                   help=argparse.SUPPRESS)
    c.add_argument("-kvu", "--kv-unified", dest="kv_unified", action="store_true", default=True,
                   help="one KV pool for every slot (always)")
    c.add_argument("-no-kvu", "--no-kv-unified", dest="kv_unified", action="store_false", help=argparse.SUPPRESS)
    c.add_argument("--no-perf", action="store_true", help="llama.cpp's internal timings off (always)")
    c.add_argument("--cache-idle-slots", action="store_true",
                   help="idle slots' prefixes stay cached, and go to --cache-ram when evicted (always)")
    for names, dest, kind, why in TUNING_WITHOUT_EFFECT:
        c.add_argument(*names, dest=dest, type=kind, default=None, metavar="VALUE" if kind is str else "N",
                       help=f"accepted, without effect: {why}")
    c.add_argument("-fit", "--fit", choices=("on", "off"), default=None,
                   help=f"'off' is what ggserve does; 'on' is accepted with a warning: {NO_FIT}")
    for names, dest, why in SWITCHES_WITHOUT_EFFECT:
        c.add_argument(*names, dest=dest, action="store_const", const=True, default=None,
                       help=f"accepted, without effect: {why}")
    for names, takes_value, _ in UNSUPPORTED:
        kind = {"metavar": "VALUE"} if takes_value else {"action": "store_const", "const": True}
        c.add_argument(*names, dest=_unsupported_dest(names), default=None, help=argparse.SUPPRESS, **kind)
    c.add_argument(*UNSUPPORTED_OFF, action="store_true", help="accepted: what ggserve does")
    c.add_argument(*DOWNLOAD_FLAGS, dest="download", default=None, metavar="SOURCE", help=argparse.SUPPRESS)
    c.add_argument(*DOWNLOAD_SWITCHES, dest="download", action="store_const", const="preset", help=argparse.SUPPRESS)


# llama.cpp's log verbosity (0 output, 1 error, 2 warning, 3 info, 4 debug) as a logging level
VERBOSITY = ("critical", "error", "warning", "info", "debug")


def _verbosity(text: str) -> str:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a verbosity (0 to 4; more is 4)")
    return VERBOSITY[min(n, len(VERBOSITY) - 1)]


def add_reasoning_flags(g: argparse._ArgumentGroup) -> None:
    """llama-server's template-side reasoning switches: server-wide chat template variables."""
    g.add_argument("-rea", "--reasoning", nargs="?", const="on", choices=["on", "off", "auto"], default="auto",
                   help="thinking in chat templates that offer it: on / off set the template's enable_thinking "
                   "(a request's chat_template_kwargs win), auto leaves it to the template")
    g.add_argument("--reasoning-effort", default="default", metavar="LEVEL",
                   help="the chat template's reasoning_effort (minimal, low, medium, high, ...) for requests "
                   "that set none; default: the template's own")
    g.add_argument("--reasoning-preserve", dest="reasoning_preserve", action="store_true", default=True,
                   help="the chat template's preserve_reasoning: templates that can keep every past turn's "
                   "reasoning do (the default, as in llama-server)")
    g.add_argument("--no-reasoning-preserve", dest="reasoning_preserve", action="store_false",
                   help="preserve_reasoning false: such templates keep the last turn's reasoning only")


def template_defaults(args: argparse.Namespace, kwargs: dict[str, object]) -> dict[str, object]:
    """--chat-template-kwargs with --reasoning, --reasoning-effort and --reasoning-preserve added
    (the kwargs win); preserve_reasoning is always set, as llama-server sets it."""
    added: dict[str, object] = {"preserve_reasoning": args.reasoning_preserve}
    if args.reasoning != "auto":
        added["enable_thinking"] = args.reasoning == "on"
    if args.reasoning_effort != "default":
        added["reasoning_effort"] = args.reasoning_effort
    return added | kwargs


def add_log_flags(o: argparse._ArgumentGroup) -> None:
    """llama-server's logging flags onto ggserve's --log-level and --log-format."""
    o.add_argument("-lv", "--verbosity", "--log-verbosity", dest="log_level", type=_verbosity, metavar="N",
                   help="llama-server's levels: 0 only fatal, 1 errors, 2 warnings, 3 info, 4 or more debug")
    o.add_argument("--log-disable", dest="log_level", action="store_const", const="critical",
                   help="only fatal messages")
    o.add_argument("--log-jsonl", dest="log_format", action="store_const", const="json",
                   help="--log-format json")
    o.add_argument("--no-log-jsonl", dest="log_format", action="store_const", const="text", help=argparse.SUPPRESS)
    for name in ("prefix", "timestamps"):
        o.add_argument(f"--log-{name}", dest=f"log_{name}", action="store_true", default=None,
                       help=f"text log lines carry the {'process' if name == 'prefix' else 'time'} (always)")
        o.add_argument(f"--no-log-{name}", dest=f"log_{name}", action="store_false", help=argparse.SUPPRESS)
    o.add_argument("--log-colors", nargs="?", const="on", choices=["on", "off", "auto"], default=None,
                   help="accepted: ggserve's log lines have no colours")
    o.add_argument("--offline", action="store_true", help="accepted: ggserve never downloads anything")


def rope_settings(args: argparse.Namespace) -> RopeSettings:
    freq_scale = args.rope_freq_scale
    if args.rope_scale is not None:
        if args.rope_scale <= 0:
            raise ValueError("--rope-scale must be positive")
        freq_scale = 1.0 / args.rope_scale
    return RopeSettings(scaling=args.rope_scaling, freq_base=args.rope_freq_base, freq_scale=freq_scale,
                        yarn_orig_ctx=args.yarn_orig_ctx, yarn_ext_factor=args.yarn_ext_factor,
                        yarn_attn_factor=args.yarn_attn_factor, yarn_beta_slow=args.yarn_beta_slow,
                        yarn_beta_fast=args.yarn_beta_fast)


def check(args: argparse.Namespace) -> None:
    """ValueError for what ggserve cannot do; warnings for the knobs it has no use for."""
    if not args.jinja:
        raise ValueError("--no-jinja: ggserve renders chat templates with Jinja always "
                         "(--chat-template NAME picks a built-in one)")
    if not args.cont_batching:
        raise ValueError("--no-cont-batching: ggserve always batches continuously (-np 1 serves one request "
                         "at a time)")
    if not args.kv_unified:
        raise ValueError("--no-kv-unified: ggserve keeps one KV pool for all slots (--ctx-per-request limits "
                         "what one request may hold)")
    for names, _, why in UNSUPPORTED:
        if getattr(args, _unsupported_dest(names)) is not None:
            raise ValueError(f"{names[-1]}: {why}")
    if args.download is not None:
        raise ValueError("ggserve does not download models: give a local GGUF with -m PATH "
                         "(or a directory of them with --models-dir)")
    for names, dest, why in (*((n, d, w) for n, d, _, w in TUNING_WITHOUT_EFFECT), *SWITCHES_WITHOUT_EFFECT):
        if getattr(args, dest) is not None:
            log.warning("%s is accepted without effect: %s", next(n for n in names if n.startswith("--")), why)
    if args.fit == "on":
        log.warning("--fit on is accepted without effect: %s", NO_FIT)
    for name, what in (("prefix", "the process's name"), ("timestamps", "the time")):
        if getattr(args, f"log_{name}") is False:
            log.warning("--no-log-%s is accepted without effect: ggserve's text log lines always carry %s "
                        "(--log-format json has them as fields)", name, what)
    if args.log_colors == "on":
        log.warning("--log-colors on is accepted without effect: ggserve's log lines have no colours")
