"""The KV pool's cell count with shared prefixes (scheduler.cache.kv), against a cell-level model."""

from __future__ import annotations

import random

from scheduler.cache import kv
from scheduler.slots import Slot


def test_a_chain_of_copies_counts_every_cell_once_whatever_is_cleared() -> None:
    a, b, c = (Slot(0, i) for i in range(3))
    slots = [a, b, c]
    kv.append(a, list(range(100)))
    kv.copy_prefix(b, a, 80)
    kv.append(b, list(range(500, 510)))
    kv.copy_prefix(c, b, 60)
    assert kv.cells_used(slots) == 100 + 10
    kv.truncate(b, 0)  # c's 60 cells are still a's
    assert kv.cells_used(slots) == 100
    kv.truncate(a, 30)  # cells 30..59 are c's alone now
    assert kv.cells_used(slots) == 60
    kv.append(a, [1] * 5)  # new cells, not the ones c kept
    assert kv.cells_used(slots) == 65


def test_random_copies_truncations_and_growth_match_a_cell_model() -> None:
    rng = random.Random(7)
    for _ in range(300):
        slots = [Slot(0, i) for i in range(5)]
        cells: list[list[int]] = [[] for _ in range(5)]  # llama.cpp's view: cell ids per sequence
        fresh = 0
        for _ in range(40):
            i = rng.randrange(5)
            op = rng.choice(["grow", "copy", "truncate", "clear"])
            if op == "grow":
                k = rng.randint(1, 20)
                kv.append(slots[i], [0] * k)
                cells[i] += range(fresh, fresh + k)
                fresh += k
            elif op == "copy" and not slots[i].tokens:
                j = rng.randrange(5)
                if j != i and slots[j].tokens:
                    n = rng.randint(1, len(slots[j].tokens))
                    kv.copy_prefix(slots[i], slots[j], n)
                    cells[i] = cells[j][:n]
            elif op == "truncate" and slots[i].tokens:
                n = rng.randrange(len(slots[i].tokens))
                kv.truncate(slots[i], n)
                del cells[i][n:]
            elif op == "clear":
                kv.truncate(slots[i], 0)
                cells[i] = []
            assert kv.cells_used(slots) == len(set().union(*cells))
