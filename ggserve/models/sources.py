"""Where router mode finds its models: a directory of GGUF files, and llama-server's preset INI.

A models directory (``--models-dir``), as llama-server reads one:
  - ``NAME.gguf`` is the model ``NAME``; ``NAME-00001-of-0000N.gguf`` (a split) is the model
    ``NAME`` too, its other shards are not models of their own;
  - a subdirectory ``NAME/`` holding a model file (or a split) and optionally an ``mmproj*.gguf``
    is the model ``NAME`` with that projector;
  - ``mmproj*.gguf`` files beside the models are projectors, never models.

A preset file (``--models-preset``) is INI: an optional ``[*]`` section of settings for every
model, then one section per model whose keys are ``serve`` flags without their dashes (``c``,
``ctx-size``, ``n-gpu-layers``), or their environment names (``LLAMA_ARG_CTX_SIZE``). A flag that
takes no value is written ``flag = true`` (``false`` leaves it out). ``model`` is the GGUF path;
``load-on-startup`` (preset only) loads the model when the server starts. Keys before the first
section (llama-server's ``version = 1``) are ignored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ggserve.config import ModelSpec

SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
GLOBAL_SECTION = "*"
PRESET_ONLY_KEYS = ("load-on-startup",)


class ModelSourceError(ValueError):
    """A models directory or preset file that cannot be used; the message says why."""


def _is_projector(name: str) -> bool:
    return "mmproj" in name.lower()


def _model_in(files: list[str]) -> str:
    """The model file among a directory's .gguf files: the single one, or a split's first shard."""
    models = [f for f in files if not _is_projector(f)]
    for name in models:
        split = SPLIT_NAME.match(name)
        if split is not None and int(split["index"]) == 1:
            return name
    whole = [f for f in models if SPLIT_NAME.match(f) is None]
    return whole[0] if whole else ""


def scan_models_dir(directory: str) -> list[ModelSpec]:
    """Every model of ``directory``, sorted by name."""
    if not os.path.isdir(directory):
        raise ModelSourceError(f"--models-dir {directory}: not a directory")
    models: list[ModelSpec] = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_dir():
            files = sorted(f for f in os.listdir(entry.path) if f.endswith(".gguf"))
            model = _model_in(files)
            if model:
                projectors = [f for f in files if _is_projector(f)]
                models.append(ModelSpec(name=entry.name, path=os.path.abspath(os.path.join(entry.path, model)),
                                        mmproj=os.path.abspath(os.path.join(entry.path, projectors[0]))
                                        if projectors else ""))
        elif entry.name.endswith(".gguf") and not _is_projector(entry.name):
            split = SPLIT_NAME.match(entry.name)
            if split is not None and int(split["index"]) != 1:
                continue
            name = split["stem"] if split is not None else entry.name.removesuffix(".gguf")
            models.append(ModelSpec(name=name, path=os.path.abspath(entry.path)))
    return models


@dataclass
class Preset:
    """A preset file: settings for every model, and each model's own (key -> value, in order)."""

    common: dict[str, str] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)


def read_preset(path: str) -> Preset:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ModelSourceError(f"--models-preset {path}: {exc.strerror}") from None
    preset = Preset()
    section: dict[str, str] | None = None  # None: before the first section
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            if not name:
                raise ModelSourceError(f"{path}:{number}: a section needs a name")
            section = preset.common if name == GLOBAL_SECTION else preset.models.setdefault(name, {})
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ModelSourceError(f"{path}:{number}: expected 'key = value', got {line!r}")
        if section is not None:
            section[key.strip()] = value.strip()
    return preset
