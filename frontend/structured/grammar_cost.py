"""Grammars that compile but that llama.cpp's grammar engine cannot run in reasonable time.

llama.cpp expands ``X{m,n}`` into n - m nested optional rules. When X may match nothing, every one
of them may be skipped at any point, and the engine tracks a parse state for each way there is:
one check of the vocabulary against ``("a" | "b"?){0,30}`` took 1.5 s on 2 cores, ``{0,40}`` 7.5 s,
``x{0,1999}`` with ``x ::= "a"?`` longer than the executor's step timeout, and a request's every
step may pay it (when none of its likeliest tokens is allowed the executor checks them all),
stalling the executor's other requests. Two checks, after llama.cpp has compiled the grammar:

- ``empty_repeat_problem``: a repetition of more than MAX_EMPTY_REPEAT of something that may be
  empty, in a rule ``root`` reaches, is refused, with a message saying what to change (the same
  without the empty case, ``[a-z]{0,1999}``, runs as fast as any grammar). It reads the grammar
  only as far as that question needs and leaves what it does not understand to the next check.
- ``slow_check_problem``: nesting and sequences of shorter such repetitions multiply the states
  too (``(("a" | "b"?){0,6}){0,6}``: 4-12 s a vocabulary), so 1,024 tokens spread over the
  vocabulary are checked against the compiled grammar, once; past MAX_SAMPLE_CHECK_S it is
  refused. The test suite's JSON schemas take 0.1-0.2 ms there, that grammar ~400 ms (each check
  of even one token pays most of it: llama.cpp walks every parse state).
"""

from __future__ import annotations

import ctypes
import re
import time

import llama_cpp
import numpy as np

MAX_EMPTY_REPEAT = 16
MAX_SAMPLE_CHECK_S = 0.010
_SAMPLE_TOKENS = 1024
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
_MAX_BOUND = 2000  # llama.cpp reads a larger upper bound as no bound (MAX_REPETITION_THRESHOLD)

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\n]+|\#[^\r\n]*)
  | (?P<define>::=)
  | (?P<name>[a-zA-Z0-9-]+)
  | (?P<literal>"(?:\\.|[^"\\])*")
  | (?P<chars>\[(?:\\.|[^\]\\])*\])
  | (?P<token>!?<[^>]*>)
  | (?P<any>\.)
  | (?P<repeat>[*+?]|\{[ \t]*\d+[ \t]*(?:,[ \t]*\d*[ \t]*)?\})
  | (?P<punct>[|()])
""", re.VERBOSE | re.DOTALL)

# An element: (atom, its repetition suffixes). An atom: ("empty" | "symbol" | "ref", name) or
# ("group", alternatives); an alternative is a list of elements.
_Element = tuple[tuple, list[tuple[int, int | None]]]


def empty_repeat_problem(text: str) -> str | None:
    """Why llama.cpp would take too long over this (already compiled) grammar, or None."""
    try:
        tokens = _tokens(text)
        rules = _rules(tokens) if tokens is not None else None
        if rules is None or "root" not in rules:
            return None
        nullable = _nullable_rules(rules)
        for name in _reached(rules):
            problem = _repeat_problem(rules[name], nullable)
            if problem is not None:
                return problem
    except RecursionError:  # groups nested thousands deep: the next check measures it
        return None
    return None


def slow_check_problem(sampler: llama_cpp.llama_sampler_p, n_vocab: int) -> str | None:
    """Why checking tokens against this compiled grammar would stall the executor, from the time
    a sample of the vocabulary takes (its first step), or None."""
    cand = np.zeros(min(_SAMPLE_TOKENS, n_vocab), dtype=_TOKEN_DATA)
    cand["id"] = np.linspace(0, n_vocab - 1, len(cand)).astype(np.int32)
    took = _check_time(sampler, cand)
    if MAX_SAMPLE_CHECK_S < took < 3 * MAX_SAMPLE_CHECK_S:  # near the limit: once more, the lesser (noise only adds)
        took = min(took, _check_time(sampler, cand))
    if took <= MAX_SAMPLE_CHECK_S:
        return None
    return (f"checking {len(cand)} tokens against this grammar took {took * 1e3:.0f} ms (at most "
            f"{MAX_SAMPLE_CHECK_S * 1e3:g}): llama.cpp would take seconds over each token of the output; its "
            "repetitions of parts that may be empty leave too many parse states (make the repeated parts non-empty)")


def _check_time(sampler: llama_cpp.llama_sampler_p, cand: np.ndarray) -> float:
    """Seconds of this thread's CPU time one check of the tokens ``cand`` takes: not the wall
    clock's, which a busy machine that preempts the thread stretches (the check runs here)."""
    cand["logit"] = 0.0  # (a check sets those of the tokens it refuses)
    array = llama_cpp.llama_token_data_array(
        cand.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), len(cand), -1, False)
    t0 = time.thread_time()
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    return time.thread_time() - t0


def _reached(rules: dict[str, list[list[_Element]]]) -> list[str]:
    """The rules ``root`` refers to, directly or not (itself included)."""
    reached, todo = {"root"}, ["root"]
    while todo:
        for name in _refs(rules.get(todo.pop(), [])):
            if name not in reached:
                reached.add(name)
                todo.append(name)
    return sorted(reached & rules.keys())


def _refs(alternatives: list[list[_Element]]) -> list[str]:
    names = []
    for seq in alternatives:
        for (kind, value), _ in seq:
            if kind == "ref":
                names.append(value)
            elif kind == "group":
                names += _refs(value)
    return names


def _tokens(text: str) -> list[tuple[str, str]] | None:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        if m.lastgroup != "space":
            tokens.append((m.lastgroup or "", m.group()))
        pos = m.end()
    return tokens


def _rules(tokens: list[tuple[str, str]]) -> dict[str, list[list[_Element]]] | None:
    """name -> alternatives; a rule runs until the next ``name ::=``."""
    starts = [i for i in range(len(tokens) - 1) if tokens[i][0] == "name" and tokens[i + 1][0] == "define"]
    if not starts or starts[0] != 0:
        return None
    rules = {}
    for k, start in enumerate(starts):
        body = tokens[start + 2 : starts[k + 1] if k + 1 < len(starts) else len(tokens)]
        parsed = _alternatives(body, 0)
        if parsed is None or parsed[1] != len(body):
            return None
        rules[tokens[start][1]] = parsed[0]
    return rules


def _alternatives(body: list[tuple[str, str]], pos: int) -> tuple[list[list[_Element]], int] | None:
    alternatives: list[list[_Element]] = [[]]
    while pos < len(body):
        kind, value = body[pos]
        if value == "|":
            alternatives.append([])
            pos += 1
        elif value == ")":
            break
        elif value == "(":
            inner = _alternatives(body, pos + 1)
            if inner is None or inner[1] >= len(body) or body[inner[1]][1] != ")":
                return None
            alternatives[-1].append((("group", inner[0]), []))
            pos = inner[1] + 1
        elif kind == "repeat":
            if not alternatives[-1]:
                return None
            alternatives[-1][-1][1].append(_bounds(value))
            pos += 1
        elif kind == "name":
            alternatives[-1].append((("ref", value), []))
            pos += 1
        elif kind in ("literal", "chars", "token", "any"):
            alternatives[-1].append((("empty" if value == '""' else "symbol", ""), []))
            pos += 1
        else:
            return None
    return alternatives, pos


def _bounds(suffix: str) -> tuple[int, int | None]:
    if suffix in "*+?":
        return {"*": (0, None), "+": (1, None), "?": (0, 1)}[suffix]
    low, comma, high = suffix.strip("{}").partition(",")
    upper = int(high) if high.strip() else None if comma else int(low)
    return int(low), None if upper is not None and upper > _MAX_BOUND else upper


def _nullable_rules(rules: dict[str, list[list[_Element]]]) -> set[str]:
    nullable: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, alternatives in rules.items():
            if name not in nullable and _alternatives_nullable(alternatives, nullable):
                nullable.add(name)
                changed = True
    return nullable


def _alternatives_nullable(alternatives: list[list[_Element]], nullable: set[str]) -> bool:
    return any(all(_element_nullable(element, nullable) for element in seq) for seq in alternatives)


def _element_nullable(element: _Element, nullable: set[str]) -> bool:
    atom, suffixes = element
    empty = _atom_nullable(atom, nullable)
    for low, _ in suffixes:
        empty = empty or low == 0
    return empty


def _atom_nullable(atom: tuple, nullable: set[str]) -> bool:
    kind, value = atom
    if kind == "group":
        return _alternatives_nullable(value, nullable)
    return kind == "empty" or (kind == "ref" and value in nullable)


def _repeat_problem(alternatives: list[list[_Element]], nullable: set[str]) -> str | None:
    for seq in alternatives:
        for atom, suffixes in seq:
            if atom[0] == "group":
                problem = _repeat_problem(atom[1], nullable)
                if problem is not None:
                    return problem
            empty = _atom_nullable(atom, nullable)
            for low, high in suffixes:
                if empty and high is not None and high > MAX_EMPTY_REPEAT:
                    return (f"the grammar repeats up to {high} times something that may match nothing: "
                            f"llama.cpp would track too many parse states for every token (at most "
                            f"{MAX_EMPTY_REPEAT} such repetitions; make the repeated part non-empty)")
                empty = empty or low == 0
    return None
