"""Router mode's models: those of --models-dir, and --models-preset's sections, each read as
``serve`` flags on top of the server's (the command line wins over a model's section, which wins
over ``[*]``).
"""

from __future__ import annotations

import argparse

from ggserve.config import ModelSpec, ServeConfig
from ggserve.flags.env import env_name
from ggserve.flags.parser import standalone_parser
from ggserve.flags.serve_config import engine_config
from ggserve.models.sources import PRESET_ONLY_KEYS, ModelSourceError, read_preset, scan_models_dir


# Settings of the whole server, not of one model: a preset may not set them.
_SERVER_WIDE = frozenset({
    "host", "port", "http_workers", "api_keys", "metrics", "metrics_no_auth", "slots", "props", "webui",
    "static_path", "ssl_keyfile", "ssl_certfile", "max_body_size", "cors_origins", "cors_methods", "cors_headers",
    "cors_credentials", "api_prefix", "shutdown_timeout", "max_restarts", "run_dir", "scheduler_endpoint",
    "executor_endpoint", "log_level", "log_format", "log_file", "models", "models_max", "models_memory",
    "models_autoload", "sleep_idle_seconds", "models_single", "models_endpoint", "model_name",
})


def router_models(base: ServeConfig, args: argparse.Namespace, argv: list[str]) -> list[ModelSpec]:
    """The models of --models-dir and --models-preset. A preset section names a directory's model
    (adding settings to it) or a new one (with ``model = PATH``); its settings are flags, read by
    this parser: the command line wins over a model's section, which wins over ``[*]`` (which
    applies to the directory's models too)."""
    found = {m.name: m for m in scan_models_dir(args.models_dir)} if args.models_dir else {}
    if not args.models_preset:
        return list(found.values())
    preset = read_preset(args.models_preset)
    parser, serve_parser = standalone_parser()
    flags = _preset_flags(serve_parser)
    models: list[ModelSpec] = []
    for name in sorted({*found, *preset.models}):
        section = {**preset.common, **preset.models.get(name, {})}
        own = {k: v for k, v in section.items() if k not in PRESET_ONLY_KEYS}
        preset_argv = _as_argv(own, flags)
        known = found.get(name)
        if known is None and not any(flags.get(k) is flags["model"] for k in own):
            raise ModelSourceError(f"preset [{name}] names no model file (model = PATH)")
        path_argv = ["--model", known.path] if known is not None else []
        model_args = parser.parse_args(["serve", *path_argv, *preset_argv, *argv])
        model_args.models_dir = model_args.models_preset = ""
        cfg = engine_config(model_args)
        overrides = {f: getattr(cfg, f) for f in ServeConfig.__struct_fields__
                     if f not in ("model", "aliases", "tags") and getattr(cfg, f) != getattr(base, f)}
        wide = sorted(set(overrides) & _SERVER_WIDE)
        if wide:
            raise ModelSourceError(f"preset [{name}] sets {', '.join(wide)}, which apply to the whole server")
        models.append(ModelSpec(name=name, path=cfg.model, aliases=cfg.aliases, tags=cfg.tags,
                                mmproj=known.mmproj if known else "", overrides=overrides, args=preset_argv,
                                load_on_startup=section.get("load-on-startup", "").lower() in ("1", "true", "on")))
    _check_names(models)
    return models


def _check_names(models: list[ModelSpec]) -> None:
    """Every name a request may give (a model's own and its aliases) picks one model."""
    owner = {m.name: m.name for m in models}
    for model in models:
        for alias in model.aliases:
            taken = owner.setdefault(alias, model.name)
            if taken != model.name:
                raise ModelSourceError(f"alias {alias!r} of model [{model.name}] is also "
                                       f"{'the name' if alias == taken else 'an alias'} of model [{taken}]")


def _preset_flags(serve_parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Preset key -> flag: every flag's names without dashes, and its environment variable."""
    flags: dict[str, argparse.Action] = {}
    for action in serve_parser._actions:
        for option in action.option_strings:
            flags[option.lstrip("-")] = action
        name = env_name(action)
        if name is not None:
            flags[name] = action
    return flags


def _as_argv(options: dict[str, str], flags: dict[str, argparse.Action]) -> list[str]:
    """Preset settings as command-line flags; ``flag = true`` for a flag without a value."""
    argv: list[str] = []
    for key, value in options.items():
        action = flags.get(key)
        if action is None:
            raise ModelSourceError(f"preset key {key!r} is not a ggserve serve flag")
        if action.nargs != 0:
            argv += [action.option_strings[-1], value]
        elif value.lower() in ("true", "on", "1", "yes"):
            argv.append(action.option_strings[-1])
        elif value.lower() in ("false", "off", "0", "no"):
            negation = flags.get(f"no-{key}")
            argv += [negation.option_strings[-1]] if negation is not None else []
        else:
            raise ModelSourceError(f"preset key {key!r} takes true or false, not {value!r}")
    return argv
