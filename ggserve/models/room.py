"""Router mode's room policy: which loaded models must go for one more to load.

Two limits, each optional: ``--models-max`` (models loaded or loading at once) and
``--models-memory`` (their estimated footprints, ``ggserve.models.memory``, summed). Only idle
models may go, least recently active first, and no more of them than the new model needs: when
even every idle one would not make room, none is unloaded (the load waits for busy models to
become idle, then fails). Pure functions: ``ggserve.models.router`` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resident:
    """A model whose engine runs (loaded or loading)."""

    name: str
    memory_bytes: int  # estimated footprint
    evictable: bool  # loaded, idle, and not asked for a moment ago
    last_active: float  # monotonic time of its last request


@dataclass(frozen=True)
class Limits:
    models_max: int  # 0: no limit
    memory_bytes: int  # 0: no budget

    def fits(self, n_models: int, used_bytes: int, need_bytes: int) -> bool:
        """Whether one more model of ``need_bytes`` fits beside ``n_models`` using ``used_bytes``."""
        return ((not self.models_max or n_models < self.models_max)
                and (not self.memory_bytes or used_bytes + need_bytes <= self.memory_bytes))

    def never_fits(self, need_bytes: int) -> bool:
        """A model larger than the whole budget cannot load, whatever is unloaded."""
        return bool(self.memory_bytes) and need_bytes > self.memory_bytes


def victims(need_bytes: int, residents: list[Resident], limits: Limits) -> list[Resident] | None:
    """The residents to unload, least recently active first, for a model of ``need_bytes`` to
    fit: [] when it fits already, None when unloading every evictable one would not be enough."""
    n_models, used = len(residents), sum(r.memory_bytes for r in residents)
    chosen: list[Resident] = []
    for resident in sorted((r for r in residents if r.evictable), key=lambda r: r.last_active):
        if limits.fits(n_models, used, need_bytes):
            break
        chosen.append(resident)
        n_models, used = n_models - 1, used - resident.memory_bytes
    return chosen if limits.fits(n_models, used, need_bytes) else None
