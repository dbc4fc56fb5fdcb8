"""llama-server's server-wide output defaults: ``--ignore-eos``, ``-r`` / ``--reverse-prompt``,
``-l`` / ``--logit-bias``, ``--grammar`` / ``--grammar-file`` and ``-j`` / ``--json-schema`` /
``-jf``. They apply to requests that leave the matching field out: a request's ``ignore_eos``,
``stop``, ``logit_bias`` (even an empty one) or output format (``grammar``, ``json_schema``,
``response_format``, tools) wins, as in llama-server. The frontend turns them into sampler
settings (frontend.api.sampling); here they are read and checked as far as the command line can be.
"""

from __future__ import annotations

import argparse
import json
import math
import re

# llama-server's TOKEN_ID(+/-)BIAS: "15043+1", "15043-1", "2-inf" (a ban)
_BIAS = re.compile(r"\s*(\d+)\s*([+-])\s*(\S+)\s*")


def parse_logit_bias(text: str) -> tuple[int, float]:
    """One ``-l`` value as (token id, bias); ValueError when it is not ``TOKEN_ID(+/-)BIAS``."""
    match = _BIAS.fullmatch(text)
    try:
        bias = float(match[3]) if match else math.nan
    except ValueError:
        bias = math.nan
    if match is None or math.isnan(bias):
        raise ValueError(f"--logit-bias {text!r} is not TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf")
    return int(match[1]), -bias if match[2] == "-" else bias


def add_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--ignore-eos", action="store_true",
                   help="requests that set no ignore_eos generate past end-of-generation tokens")
    g.add_argument("-r", "--reverse-prompt", dest="stop", action="append", default=[], metavar="PROMPT",
                   help="stop string of requests that give none (repeatable)")
    g.add_argument("-l", "--logit-bias", action="append", default=[], metavar="TOKEN_ID(+/-)BIAS",
                   help="logit bias of requests that set none, e.g. 15043+1, 15043-inf (repeatable)")
    g.add_argument("--grammar", default=None, help="GBNF grammar of requests that constrain their output with none")
    g.add_argument("--grammar-file", default=None, help="file with that grammar")
    g.add_argument("-j", "--json-schema", default=None,
                   help='JSON schema of requests that constrain their output with none, e.g. {"type": "object"}')
    g.add_argument("-jf", "--json-schema-file", default=None, help="file with that JSON schema")


def grammar_defaults(args: argparse.Namespace) -> tuple[str, str]:
    """(GBNF, JSON schema text) from the flags, at most one of them set; ValueError names the problem."""
    flags = (("--grammar", args.grammar), ("--grammar-file", args.grammar_file),
             ("--json-schema", args.json_schema), ("--json-schema-file", args.json_schema_file))
    given = [flag for flag, value in flags if value is not None]
    if len(given) > 1:
        raise ValueError(f"{given[0]} and {given[1]} cannot be used together")
    grammar = args.grammar if args.grammar is not None else _read(args.grammar_file, "--grammar-file")
    schema = args.json_schema if args.json_schema is not None else _read(args.json_schema_file, "--json-schema-file")
    if grammar is not None and not grammar.strip():
        raise ValueError(f"{given[0]}: the grammar is empty")
    if schema is not None:
        try:
            value = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{given[0]}: not JSON: {exc}") from None
        if not isinstance(value, (dict, bool)):
            raise ValueError(f"{given[0]}: a JSON schema is an object (or true / false)")
    return grammar or "", schema or ""


def _read(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {path}: {exc}") from None
