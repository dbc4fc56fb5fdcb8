"""llama.cpp's model and context parameters from the configuration, in one place: the target
model's context and a draft model's share them, as llama-server gives both the same."""

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


def model_params(cfg: ServeConfig, n_gpu_layers: int) -> llama_cpp.llama_model_params:
    """``n_gpu_layers``: -1 for all (the target's -ngl or the draft's -ngld)."""
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 999
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
    if cfg.cpu_only:
        mparams.devices = ctypes.addressof(_NO_DEVICES)
    return mparams


def context_params(cfg: ServeConfig, n_seq_max: int) -> llama_cpp.llama_context_params:
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cfg.ctx_size
    cparams.n_batch = cfg.batch_size
    cparams.n_ubatch = min(cfg.ubatch_size, cfg.batch_size)
    cparams.n_seq_max = n_seq_max
    cparams.n_threads = cfg.n_threads
    cparams.n_threads_batch = cfg.threads_batch or cfg.n_threads
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
