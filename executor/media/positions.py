"""Token indices -> llama.cpp positions, per sequence, for M-RoPE models (Qwen2-VL family).

The scheduler counts a sequence in tokens: one per KV cell, a media chunk's embeddings included.
llama.cpp's positions are the same numbers until an M-RoPE image: its n embeddings take n cells
but all sit at the image's first position p (in the time section; rows and columns go in two
others), and the text after it starts at p + n_pos, n_pos = max(rows, columns) < n. So every
position that reaches llama.cpp (a batch's, a KV edit's bound) is mapped here, from the layout of
the shifting chunks of the tokens the sequence holds.

A layout follows the sequence's cells, as the scheduler edits them: a request's start sets it
(its prompt's chunks), a copy gives the destination the source's, a host-memory entry keeps the
one it was saved with, a clear or a slot file (text only) empties it. A layout covers more than
the cells (a truncated prompt keeps its chunks): harmless, as positions before an index depend
only on the chunks before it, and the next start replaces it. Context shifts (and n_cache_reuse,
which shifts) never reach these models: llama.cpp cannot move M-RoPE positions
(``llama_memory_can_shift`` is false), so the scheduler turns them off, as llama-server does.
"""

from __future__ import annotations

from ipc.protocol import BatchItem, KvOp, KvOpKind, MediaChunk

# (start, n_tokens, n_pos) of each chunk whose n_pos differs from n_tokens, in prompt order
Layout = tuple[tuple[int, int, int], ...]


def layout_of(media: list[MediaChunk]) -> Layout:
    return tuple((c.start, c.n_tokens, c.n_pos) for c in media if c.n_pos and c.n_pos != c.n_tokens)


def position(layout: Layout, index: int) -> int:
    """llama.cpp's position for the token at ``index`` (a chunk's first index: the chunk's). An
    index inside a chunk has none: a chunk's cells go or stay together."""
    pos = index
    for start, n_tokens, n_pos in layout:
        if index <= start:
            break
        if index < start + n_tokens:
            raise ValueError(f"token index {index} is inside a media chunk ({start}..{start + n_tokens - 1})")
        pos -= n_tokens - n_pos
    return pos


def index_of(layout: Layout, pos: int) -> int:
    """The first token index at llama.cpp position ``pos`` (-1 stays -1: an empty sequence)."""
    shift = 0
    for start, n_tokens, n_pos in layout:
        if pos <= start - shift:
            break
        shift += n_tokens - n_pos
    return pos + shift if pos >= 0 else pos


class SeqPositions:
    """Every sequence's layout (none: positions are indices) and the host-memory entries'."""

    def __init__(self) -> None:
        self.layouts: dict[int, Layout] = {}
        self._host: dict[int, Layout] = {}  # --cache-ram entries, by entry id

    def start(self, seq_id: int, media: list[MediaChunk]) -> None:
        self._set(seq_id, layout_of(media))

    def position(self, seq_id: int, index: int) -> int:
        layout = self.layouts.get(seq_id)
        return position(layout, index) if layout else index

    def first_positions(self, items: list[BatchItem]) -> list[int] | None:
        """Each item's first position, or None when they are all indices (no item's sequence
        holds an M-RoPE image: the usual step)."""
        if not any(item.seq_id in self.layouts for item in items):
            return None
        return [self.position(item.seq_id, item.pos) for item in items]

    def indices(self, pos_min: list[int]) -> list[int]:
        """Each sequence's lowest llama.cpp position as a token index (StepResult.pos_min)."""
        for seq_id, layout in self.layouts.items():
            if seq_id < len(pos_min):
                pos_min[seq_id] = index_of(layout, pos_min[seq_id])
        return pos_min

    def apply(self, op: KvOp) -> None:
        """Follow a KV edit the engine has applied (its bounds mapped with ``position`` first)."""
        if op.kind in (KvOpKind.CLEAR, KvOpKind.LOAD_FILE):
            self._set(op.seq_id, ())
        elif op.kind == KvOpKind.COPY:
            self._set(op.seq_id, self.layouts.get(op.src_seq_id, ()))
        elif op.kind == KvOpKind.SAVE:
            self._host[op.entry_id] = self.layouts.get(op.seq_id, ())
        elif op.kind == KvOpKind.RESTORE:
            self._set(op.seq_id, self._host.get(op.entry_id, ()))
        elif op.kind == KvOpKind.DROP:
            self._host.pop(op.entry_id, None)

    def _set(self, seq_id: int, layout: Layout) -> None:
        if layout:
            self.layouts[seq_id] = layout
        else:
            self.layouts.pop(seq_id, None)
