"""Which GPUs each executor sees (its ``CUDA_VISIBLE_DEVICES``), from ``--gpus``,
``--executors`` and llama-server's ``-sm`` / ``-mg``.

ggserve's default is data parallel: one executor per GPU, each with a whole copy of the model
(``-sm none``; ``-mg N`` shifts the default GPUs to N, N+1, ...). With ``-sm layer``, ``row`` or
``tensor`` an executor spreads its model over several GPUs as llama-server does: ``--gpus`` is
cut into equal consecutive groups, one per executor, or, without ``--gpus``, a single executor
sees every GPU. ``-mg`` and ``-ts`` then index the executor's own GPUs.
"""

from __future__ import annotations

SPLIT_MODES = ("none", "layer", "row", "tensor")


def executor_gpus(gpus: list[str], executors: int, split_mode: str, main_gpu: int) -> list[str | None]:
    """Each executor's CUDA_VISIBLE_DEVICES (None: leave it as it is, every GPU); ValueError
    for a combination that cannot be laid out."""
    if split_mode == "none":
        return [gpus[i] if i < len(gpus) else str(main_gpu + i) for i in range(executors)]
    if not gpus:
        if executors > 1:
            raise ValueError(f"-sm {split_mode} with --executors {executors}: give the GPUs of all executors "
                             "with --gpus (each executor takes an equal share)")
        return [None]
    if len(gpus) % executors:
        raise ValueError(f"-sm {split_mode}: {len(gpus)} GPUs in --gpus do not split evenly among "
                         f"{executors} executors")
    k = len(gpus) // executors
    return [",".join(gpus[i * k:(i + 1) * k]) for i in range(executors)]


def check_split(gpus: list[str], executors: int, split_mode: str, main_gpu: int, tensor_split: list[float]) -> None:
    """ValueError for -mg / -ts values that name GPUs an executor does not have."""
    executor_gpus(gpus, executors, split_mode, main_gpu)
    if main_gpu < 0:
        raise ValueError("-mg: a GPU index is 0 or more")
    if any(share < 0 for share in tensor_split):
        raise ValueError("-ts: proportions are 0 or more")
    if split_mode == "none":
        if tensor_split:
            raise ValueError("-ts spreads a model over GPUs: use it with -sm layer, row or tensor")
        return
    per_executor = len(gpus) // executors if gpus else None
    if per_executor is not None and main_gpu >= per_executor:
        raise ValueError(f"-mg {main_gpu}: each executor has {per_executor} GPU(s), indexed from 0")
    if per_executor is not None and len(tensor_split) > per_executor:
        raise ValueError(f"-ts has {len(tensor_split)} proportions for {per_executor} GPU(s) per executor")
