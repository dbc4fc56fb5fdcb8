"""Sampler orders: llama-server's sampler names, aliases and one-letter codes.

A list of names (``["top_k", "min-p", "temp"]``) or a string of letters (``"kmt"``), as
llama-server's ``--samplers`` / ``--sampler-seq`` and the ``samplers`` request field take them.
llama-server skips a name it does not know with a warning in its log; here it is an error (a 400
naming the field, or a usage error at start), so a typo is never silently a different chain.
"""

from __future__ import annotations

# Canonical names, as the executor's chain builder knows them, with their one-letter codes.
_CODES = {
    "d": "dry", "k": "top_k", "y": "typ_p", "p": "top_p", "s": "top_n_sigma", "m": "min_p",
    "t": "temperature", "x": "xtc", "i": "infill", "e": "penalties", "a": "adaptive_p",
}
_CANONICAL = frozenset(_CODES.values())
_MISC_ALIASES = {"nucleus": "top_p", "temp": "temperature", "typ": "typ_p"}


def _aliases() -> dict[str, str]:
    names = {name: name for name in _CANONICAL} | _MISC_ALIASES
    for name in _CANONICAL:
        if "_" in name:  # top-k, topk
            names[name.replace("_", "-")] = name
            names[name.replace("_", "")] = name
    return names


_BY_NAME = _aliases()

# llama.cpp's infill sampler compares every pair of its candidates (it merges tokens that begin
# one another): over a whole vocabulary (262k for Gemma 3) one step would take hours.
INFILL_MAX_CANDIDATES = 256


def infill_problem(order: list[str], top_k: int) -> str | None:
    """Why the infill sampler cannot run in this order, or None: top_k must cut its candidates first."""
    if "infill" not in order or ("top_k" in order[: order.index("infill")] and 0 < top_k <= INFILL_MAX_CANDIDATES):
        return None
    return (f"the infill sampler compares every pair of its candidates: put top_k (1-{INFILL_MAX_CANDIDATES}) "
            "before it in the sampler order")


def sampler_order(value: list[str] | str) -> list[str]:
    """Canonical names in the given order; ValueError for a name or letter llama.cpp does not have."""
    if isinstance(value, str):
        unknown = [c for c in value if c not in _CODES]
        if unknown:
            raise ValueError(f"unknown sampler letter(s) {''.join(unknown)!r}; known: {''.join(_CODES)}")
        return [_CODES[c] for c in value]
    order = []
    for name in value:
        canonical = _BY_NAME.get(name.lower())
        if canonical is None:
            raise ValueError(f"unknown sampler {name!r}; known: {', '.join(sorted(_CANONICAL))}")
        order.append(canonical)
    return order
