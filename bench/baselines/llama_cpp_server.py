"""Run llama-cpp-python's own server (`python -m llama_cpp.server`), optionally without repacking.

Usage: python -m bench.baselines.llama_cpp_server [--no-repack] <llama_cpp.server arguments>

llama-cpp-python has no option for llama.cpp's `use_extra_bufts` model parameter, which
llama-server's `--no-repack` turns off (weight repacking into CPU-specific layouts, AMX among
them). Where the CPU advertises AMX but the virtual machine does not let it run, prompt
processing dies (SIGILL/SIGSEGV in ggml_backend_amx_mul_mat) unless it is off, so this wrapper
can switch it off before the server loads its model.
"""

from __future__ import annotations

import sys

import llama_cpp.llama_cpp as llama_cpp_lib


def _disable_repacking() -> None:
    default_params = llama_cpp_lib.llama_model_default_params

    def params_without_repacking() -> llama_cpp_lib.llama_model_params:
        params = default_params()
        params.use_extra_bufts = False
        return params

    llama_cpp_lib.llama_model_default_params = params_without_repacking


def main(argv: list[str]) -> None:
    if "--no-repack" in argv:
        argv = [arg for arg in argv if arg != "--no-repack"]
        _disable_repacking()
    from llama_cpp.server.__main__ import main as server_main  # parses sys.argv

    sys.argv = ["llama_cpp.server", *argv]
    server_main()


if __name__ == "__main__":
    main(sys.argv[1:])
