"""The scheduler's view of each executor process: its slots, running requests, the step in
flight and the one planned behind it, the KV edits waiting for its next step, and the slot
save/restore actions waiting for it."""

from __future__ import annotations

from dataclasses import dataclass

from ipc.protocol import ExecutorInfo, KvOp, SeqStart, SlotAction
from scheduler import lora
from scheduler.cache import kv
from scheduler.cache.host_cache import HostCacheIndex
from scheduler.request import Request
from scheduler.slots import Slot
from scheduler.speculative.allocation import StepCost


@dataclass(eq=False)
class FileAction:
    """A slot save or restore (POST /slots/{id}) waiting for its executor, which runs it as a
    step of its own: nothing else touches the KV cache meanwhile, so the cells stay accounted."""

    peer: bytes
    msg: SlotAction
    slot: Slot
    n_saved: int = 0  # SAVE: the tokens written


class ExecutorState:
    """The scheduler's view of one executor process: its slots, running requests and the plan
    in flight. A restarted executor gets a new ExecutorState: empty slots, empty prefix cache."""

    def __init__(
        self, executor_id: int, info: ExecutorInfo, n_batch: int, ctx_per_request: int, cache_ram_bytes: int
    ) -> None:
        self.id = executor_id
        self.info = info
        self.alive = True
        self.slots = [Slot(executor_id, s) for s in range(info.n_slots)]
        self.running: list[Request] = []  # admission order
        # The step running: its id, when it was sent, and seq -> (request, tokens it adds).
        self.in_flight: dict[int, tuple[Request, int]] | None = None
        self.in_flight_prompt_tokens = 0  # prompt tokens of the step running (for the metrics)
        self.step_id = 0
        self.step_sent_at = 0.0
        # The step planned behind it before its result (asynchronous scheduling): its id and
        # seq -> (request, 1). It runs as soon as the running one ends.
        self.queued: dict[int, tuple[Request, int]] | None = None
        self.queued_step_id = 0
        self.kv_ops: list[KvOp] = []
        self.starts: list[SeqStart] = []
        self.ends: list[int] = []
        self.end_reasoning: list[tuple[int, Request]] = []  # (seq, its request) whose thinking ends next step
        # The KV cache is one pool of n_ctx cells; one request may hold up to n_ctx_slot of them.
        self.n_ctx = info.n_ctx
        self.n_ctx_slot = min(ctx_per_request or info.n_ctx, info.n_ctx)
        self.n_batch = n_batch
        # Tokens per step; halved while llama_decode finds no KV room, restored as steps succeed.
        self.budget = n_batch
        # (a measured save's bytes per token: on a sliding-window model the KV cache's own per cell
        # undercounts a prefix, whose window layers hold its every token)
        bytes_per_token = info.save_bytes_per_token or info.kv_bytes / max(1, info.n_ctx)
        self.host_cache = HostCacheIndex(cache_ram_bytes, bytes_per_token, info.save_run_seconds)
        self.file_actions: list[FileAction] = []  # waiting, oldest first
        self.file_in_flight: FileAction | None = None  # the step running is this action's
        self.lora = lora.NO_LORA  # the adapter set its context runs with (a new process: none)
        self.step_cost = StepCost()  # its step time by tokens (how long drafts may be)
        self.draft_token_seconds = 0.0  # a draft model's time per drafted token (recent average)
        self.prompt_turn = False  # on a CPU: the next step that must choose serves prompt chunks

    @property
    def idle(self) -> bool:
        return self.alive and self.in_flight is None

    @property
    def free_cells(self) -> int:
        return self.n_ctx - kv.cells_used(self.slots)
