"""How one sequence's sampling fails without failing the step."""

from __future__ import annotations


class SequenceFailed(Exception):
    """This sequence cannot go on (its grammar has no allowed token, its sampler cannot be
    built, a trigger pattern is too slow); its request fails alone, the step and the other
    sequences go on."""
