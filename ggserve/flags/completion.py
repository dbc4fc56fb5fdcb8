"""--completion-bash (llama-server's): a bash completion script for ggserve's command line, made
from the serve parser itself, so it knows every flag: ``source <(ggserve serve --completion-bash)``.
Flags naming files or directories complete paths, flags with choices complete those."""

from __future__ import annotations

import argparse
import shlex

# the serve flags whose value is a file, or a directory (their dests)
FILE_DESTS = frozenset({"model", "mmproj", "chat_template_file", "lora", "control_vectors", "spec_draft_model",
                        "grammar_file", "json_schema_file", "api_key_file", "ssl_keyfile", "ssl_certfile",
                        "models_preset", "log_file", "ui_config_file"})
DIR_DESTS = frozenset({"models_dir", "slot_save_path", "media_path", "static_path", "log_prompts_dir", "run_dir",
                       "video_ffmpeg_dir"})


class CompletionBash(argparse.Action):
    """Print the script for the parser it belongs to, then exit (as --version does)."""

    def __init__(self, option_strings: list[str], dest: str, subcommands: argparse._SubParsersAction,
                 **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help=kwargs.get("help"))
        self.subcommands = subcommands

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(script(parser, list(self.subcommands.choices)))
        parser.exit()


def script(serve: argparse.ArgumentParser, subcommands: list[str]) -> str:
    actions = [a for a in serve._actions if a.option_strings]
    flags = sorted(option for a in actions for option in a.option_strings)
    cases = []
    for kind, dests in (("-f", FILE_DESTS), ("-d", DIR_DESTS)):
        names = [o for a in actions if a.dest in dests for o in a.option_strings]
        cases.append(f'        {"|".join(names)}) COMPREPLY=($(compgen {kind} -- "$cur")); return ;;')
    for action in actions:
        if action.choices:
            words = shlex.quote(" ".join(map(str, action.choices)))
            cases.append(f'        {"|".join(action.option_strings)}) COMPREPLY=($(compgen -W {words} -- "$cur")); '
                         "return ;;")
    case_lines = "\n".join(cases)
    return f'''# bash completion for ggserve: source <(ggserve serve --completion-bash)
_ggserve() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W {shlex.quote(" ".join(subcommands))} -- "$cur"))
        return
    fi
    [[ ${{COMP_WORDS[1]}} == serve ]] || return
    case "$prev" in
{case_lines}
    esac
    COMPREPLY=($(compgen -W {shlex.quote(" ".join(flags))} -- "$cur"))
}}
complete -o default -F _ggserve ggserve'''
