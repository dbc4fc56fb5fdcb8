"""llama.cpp's model and context parameters from the configuration, in one place for the target
model and a draft model: they share every setting but the draft's own flags (-ngld, -devd, -td,
-tbd, -ctkd, -ctvd), as in llama-server."""

from __future__ import annotations

import ctypes

import llama_cpp

from ggserve.config import ServeConfig

ROPE_SCALING = {
    "": llama_cpp.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,  # the GGUF's
    "none": llama_cpp.LLAMA_ROPE_SCALING_TYPE_NONE,
    "linear": llama_cpp.LLAMA_ROPE_SCALING_TYPE_LINEAR,
    "yarn": llama_cpp.LLAMA_ROPE_SCALING_TYPE_YARN,
}
# -dev none: the device list llama.cpp reads is empty (its NULL terminator only); kept for the process
_NO_DEVICES = (ctypes.c_void_p * 1)(None)
SPLIT_MODE = {
    "none": llama_cpp.LLAMA_SPLIT_MODE_NONE,
    "layer": llama_cpp.LLAMA_SPLIT_MODE_LAYER,
    "row": llama_cpp.LLAMA_SPLIT_MODE_ROW,
    "tensor": llama_cpp.LLAMA_SPLIT_MODE_TENSOR,
}
CACHE_TYPES = {
    "f32": llama_cpp.GGML_TYPE_F32,
    "f16": llama_cpp.GGML_TYPE_F16,
    "bf16": 30,  # GGML_TYPE_BF16 (not exported by llama-cpp-python)
    "iq4_nl": llama_cpp.GGML_TYPE_IQ4_NL,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
    "q4_1": llama_cpp.GGML_TYPE_Q4_1,
    "q5_0": llama_cpp.GGML_TYPE_Q5_0,
    "q5_1": llama_cpp.GGML_TYPE_Q5_1,
}
LOAD_MODE = {
    "auto": llama_cpp.LLAMA_LOAD_MODE_AUTO,
    "none": llama_cpp.LLAMA_LOAD_MODE_NONE,
    "mmap": llama_cpp.LLAMA_LOAD_MODE_MMAP,
    "mlock": llama_cpp.LLAMA_LOAD_MODE_MLOCK,
    "mmap+mlock": llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
    "dio": llama_cpp.LLAMA_LOAD_MODE_DIRECT_IO,
}
LAZY_MODE = {"auto": llama_cpp.LLAMA_LAZY_MODE_AUTO, "on": llama_cpp.LLAMA_LAZY_MODE_ON,
             "off": llama_cpp.LLAMA_LAZY_MODE_OFF}
NUMA = {
    "": llama_cpp.GGML_NUMA_STRATEGY_DISABLED,
    "distribute": llama_cpp.GGML_NUMA_STRATEGY_DISTRIBUTE,
    "isolate": llama_cpp.GGML_NUMA_STRATEGY_ISOLATE,
    "numactl": llama_cpp.GGML_NUMA_STRATEGY_NUMACTL,
}


def model_params(cfg: ServeConfig, draft: bool = False) -> llama_cpp.llama_model_params:
    """The target's parameters, or with ``draft`` the draft model's (its -ngld and -devd)."""
    mparams = llama_cpp.llama_model_default_params()
    n_gpu_layers = cfg.spec_draft_ngl if draft else cfg.n_gpu_layers
    mparams.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 999  # -1: all
    mparams.use_extra_bufts = cfg.repack
    mparams.check_tensors = cfg.check_tensors
    mparams.no_host = not cfg.host_buffer
    mparams.load_mode = LOAD_MODE[cfg.load_mode]
    mparams.lazy_mode = LAZY_MODE[cfg.lazy_mode]
    # the executor sees its own GPUs only (ggserve.gpu_groups): -sm none is the first of them
    mparams.split_mode = SPLIT_MODE[cfg.split_mode]
    mparams.main_gpu = cfg.main_gpu if cfg.split_mode != "none" else 0
    if cfg.tensor_split:  # ctypes keeps the array alive with mparams
        mparams.tensor_split = (ctypes.c_float * llama_cpp.llama_max_devices())(*cfg.tensor_split)
    if cfg.spec_draft_cpu_only if draft else cfg.cpu_only:
        mparams.devices = ctypes.addressof(_NO_DEVICES)
    return mparams


def context_params(cfg: ServeConfig, n_seq_max: int, draft: bool = False) -> llama_cpp.llama_context_params:
    """The target's context, or with ``draft`` the draft model's (its -td, -tbd, -ctkd, -ctvd)."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cfg.ctx_size
    cparams.n_batch = cfg.batch_size
    cparams.n_ubatch = min(cfg.ubatch_size, cfg.batch_size)
    cparams.n_seq_max = n_seq_max
    threads = (cfg.spec_draft_threads or cfg.n_threads) if draft else cfg.n_threads
    cparams.n_threads = threads
    cparams.n_threads_batch = (cfg.spec_draft_threads_batch if draft else cfg.threads_batch) or threads
    cparams.type_k = CACHE_TYPES[cfg.spec_draft_type_k if draft else cfg.cache_type_k]
    cparams.type_v = CACHE_TYPES[cfg.spec_draft_type_v if draft else cfg.cache_type_v]
    cparams.kv_unified = True  # batch-invariant attention across sequences (design.md)
    cparams.swa_full = False  # sliding-window cells per sequence only; see scheduler.policy
    cparams.no_perf = True
    cparams.offload_kqv = cfg.kv_offload
    cparams.op_offload = cfg.op_offload
    rope = cfg.rope
    cparams.rope_scaling_type = ROPE_SCALING[rope.scaling]
    cparams.rope_freq_base = rope.freq_base
    cparams.rope_freq_scale = rope.freq_scale
    cparams.yarn_orig_ctx = rope.yarn_orig_ctx
    cparams.yarn_ext_factor = rope.yarn_ext_factor
    cparams.yarn_attn_factor = rope.yarn_attn_factor
    cparams.yarn_beta_slow = rope.yarn_beta_slow
    cparams.yarn_beta_fast = rope.yarn_beta_fast
    return cparams
