"""ggserve.gpu_groups: the GPUs each executor sees, data parallel by default and split as
llama-server splits a model with -sm layer / row / tensor, and the layouts it refuses."""

from __future__ import annotations

import re

import pytest

from ggserve.gpu_groups import check_split, executor_gpus


def test_by_default_each_executor_takes_one_gpu() -> None:
    assert executor_gpus([], 3, "none", 0) == ["0", "1", "2"]
    assert executor_gpus(["3", "5"], 2, "none", 0) == ["3", "5"]
    assert executor_gpus([], 2, "none", 2) == ["2", "3"]  # -mg shifts the default GPUs


def test_split_modes_give_each_executor_an_equal_group_or_every_gpu() -> None:
    assert executor_gpus(["0", "1", "2", "3"], 2, "layer", 0) == ["0,1", "2,3"]
    assert executor_gpus(["4", "6"], 1, "row", 1) == ["4,6"]
    assert executor_gpus([], 1, "tensor", 0) == [None]  # CUDA_VISIBLE_DEVICES left as it is


@pytest.mark.parametrize(("gpus", "executors", "mode", "main_gpu", "shares", "message"), [
    ([], 2, "layer", 0, [], "give the GPUs of all executors with --gpus"),
    (["0", "1", "2"], 2, "layer", 0, [], "do not split evenly among 2 executors"),
    (["0", "1"], 1, "row", 2, [], "-mg 2: each executor has 2 GPU(s)"),
    (["0", "1"], 1, "layer", 0, [1, 1, 1], "-ts has 3 proportions for 2 GPU(s)"),
    ([], 1, "none", 0, [3, 1], "use it with -sm layer, row or tensor"),
    ([], 1, "layer", 0, [1, -1], "proportions are 0 or more"),
    ([], 1, "none", -1, [], "a GPU index is 0 or more"),
])
def test_layouts_that_name_missing_gpus_are_refused(gpus, executors, mode, main_gpu, shares, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_split(gpus, executors, mode, main_gpu, shares)
