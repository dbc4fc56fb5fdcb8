"""llama.cpp thread pools placed as llama-server's -C / -Cr / --cpu-strict / --prio / --poll say,
and the executor's process priority.

Without those flags an executor attaches no pool and llama.cpp makes a throwaway one with its
defaults for each step, as before. With them it attaches two to a model's context
(``llama_attach_threadpool``): one for steps of one token, one for steps of several (prompts,
decodes of several sequences), the same one where the two placements agree. A draft model's
context gets its own, placed by the draft's flags (-Cd, --prio-draft, ...) with its thread counts
(-td, -tbd). Their threads are OpenMP's in the default build: each step applies the pool's
affinity and priority to them, the executor's main thread included.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

import llama_cpp

from ggserve.config import CpuPlacement, ServeConfig
from ggserve.llama.libs import library

log = logging.getLogger("executor")

GGML_MAX_N_THREADS = 512
# ggml_sched_priority -> the nice value llama-server's set_process_priority gives the process
NICE = {-1: 5, 0: 0, 1: -5, 2: -10, 3: -20}
REALTIME_FROM = 1  # ggml runs threads of this priority and above with SCHED_FIFO
# ggml_sched_priority -> the scheduling policy and priority ggml gives a pool's threads
THREAD_POLICY = {-1: (os.SCHED_BATCH, 0), 1: (os.SCHED_FIFO, 40), 2: (os.SCHED_FIFO, 80), 3: (os.SCHED_FIFO, 90)}


class _ThreadpoolParams(ctypes.Structure):
    """ggml.h's struct ggml_threadpool_params."""

    _fields_ = [("cpumask", ctypes.c_bool * GGML_MAX_N_THREADS), ("n_threads", ctypes.c_int),
                ("prio", ctypes.c_int), ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool),
                ("paused", ctypes.c_bool)]


def _ggml_cpu() -> ctypes.CDLL:
    """ggml's CPU backend, where the thread pools are made."""
    lib = library("libggml-cpu")
    lib.ggml_threadpool_new.argtypes = [ctypes.POINTER(_ThreadpoolParams)]
    lib.ggml_threadpool_new.restype = ctypes.c_void_p
    lib.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
    lib.ggml_threadpool_free.restype = None
    return lib


def _attach_fn() -> ctypes._CFuncPtr:
    fn = llama_cpp.llama_cpp._lib.llama_attach_threadpool  # not bound by llama-cpp-python
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    return fn


def executor_cpus(placement: CpuPlacement, n_threads: int, executor_id: int, executors: int) -> list[int]:
    """The CPUs of one executor's pool. With strict placement and several executors each takes
    its own run of the mask (executor i from CPU i x n_threads on, wrapping), so that two
    executors' threads do not share CPUs while the mask has enough."""
    cpus = placement.cpus
    if not (placement.strict and executors > 1 and cpus):
        return cpus
    start = executor_id * n_threads
    return [cpus[(start + i) % len(cpus)] for i in range(min(n_threads, len(cpus)))]


def _placements(cfg: ServeConfig) -> tuple[CpuPlacement, ...]:
    """Every pool's placement: the target's two, the draft model's two."""
    return cfg.cpu, cfg.cpu_batch, cfg.spec_draft_cpu, cfg.spec_draft_cpu_batch


def apply_priority(cfg: ServeConfig, executor_id: int) -> bool:
    """Set this executor process's nice value as llama-server sets its own (--prio); whether
    llama.cpp's threads may take real-time scheduling, which the prio asks for from medium on.
    Where this process may not (no CAP_SYS_NICE), say so once, rather than let ggml warn at
    every step."""
    prio = cfg.cpu.prio  # the process's, as llama-server's (--prio-batch places threads only)
    if NICE[prio] != 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, NICE[prio])
        except OSError as exc:
            log.warning("executor %d: --prio %d: cannot set the process's nice value to %d: %s",
                        executor_id, prio, NICE[prio], exc.strerror)
    highest = max(p.prio for p in _placements(cfg))
    if highest < REALTIME_FROM or _may_run_realtime():
        return True
    log.warning("executor %d: --prio %d: this process may not use real-time scheduling for llama.cpp's "
                "threads (needs CAP_SYS_NICE); they keep normal scheduling", executor_id, highest)
    return False


def _may_run_realtime() -> bool:
    """Whether a thread of this process may switch to SCHED_FIFO (tried on a throwaway thread)."""
    allowed = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # 0: the calling thread
            allowed.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return bool(allowed)


class ExecutorThreads:
    """One executor's placement: the process priority, set once, and the pools of each context."""

    def __init__(self, cfg: ServeConfig, executor_id: int) -> None:
        self.cfg, self.executor_id = cfg, executor_id
        custom = any(p.custom for p in _placements(cfg))
        self.realtime = apply_priority(cfg, executor_id) if custom else False
        if cfg.cpu.custom or cfg.cpu_batch.custom:
            self._place_main_thread()

    def _place_main_thread(self) -> None:
        """Place this thread as thread 0 of the one-token pool. ggml places a pool's threads at
        every step of more than one thread; a pool of one runs on the calling thread, untouched."""
        placement = self.cfg.cpu
        cpus = executor_cpus(placement, self.cfg.n_threads, self.executor_id, self.cfg.executors)
        if cpus:
            os.sched_setaffinity(0, cpus[:1] if placement.strict else cpus)  # 0: the calling thread
        if placement.prio in THREAD_POLICY and (self.realtime or placement.prio < REALTIME_FROM):
            policy, priority = THREAD_POLICY[placement.prio]
            os.sched_setscheduler(0, policy, os.sched_param(priority))

    def attach(self, ctx: llama_cpp.llama_context_p, draft: bool = False) -> ThreadPools | None:
        """Pools for the target's ``ctx``, or with ``draft`` the draft model's, as placed (None
        without that model's placement flags: llama.cpp's own)."""
        cfg = self.cfg
        if draft:  # its thread counts as executor.model.params gives them to its context
            single, batch = cfg.spec_draft_cpu, cfg.spec_draft_cpu_batch
            n_single = cfg.spec_draft_threads or cfg.n_threads
            n_batch = cfg.spec_draft_threads_batch or n_single
        else:
            single, batch = cfg.cpu, cfg.cpu_batch
            n_single, n_batch = cfg.n_threads, cfg.threads_batch or cfg.n_threads
        if not (single.custom or batch.custom):
            return None
        pools = ThreadPools(ctx, single, batch, (n_single, n_batch), cfg, self.executor_id, self.realtime)
        log.info("executor %d: %sllama.cpp threads: %s", self.executor_id, "the draft model's " if draft else "",
                 pools.description)
        return pools


class ThreadPools:
    """The pools one llama.cpp context runs its steps on; ``close`` after the context is freed."""

    def __init__(self, ctx: llama_cpp.llama_context_p, single_placement: CpuPlacement, batch_placement: CpuPlacement,
                 threads: tuple[int, int], cfg: ServeConfig, executor_id: int, realtime: bool) -> None:
        self._lib = _ggml_cpu()
        n_single, n_batch = threads
        single = self._params(single_placement, n_single, cfg, executor_id, realtime)
        batch = self._params(batch_placement, n_batch, cfg, executor_id, realtime)
        self.pools: list[int] = []
        same = n_single == n_batch and bytes(single) == bytes(batch)
        if not same:
            single.paused = True  # as llama-server: the batch pool starts running, this one on first use
        for params in (single,) if same else (batch, single):
            pool = self._lib.ggml_threadpool_new(ctypes.byref(params))
            if not pool:
                self.close()
                raise RuntimeError(f"llama.cpp could not create a thread pool of {params.n_threads} threads")
            self.pools.append(pool)
        _attach_fn()(ctx, self.pools[-1], None if same else self.pools[0])
        self.description = (describe(single) if same else
                            f"one-token steps {describe(single)}; steps of several tokens {describe(batch)}")

    @staticmethod
    def _params(placement: CpuPlacement, n_threads: int, cfg: ServeConfig, executor_id: int,
                realtime: bool) -> _ThreadpoolParams:
        params = _ThreadpoolParams()
        cpus = executor_cpus(placement, n_threads, executor_id, cfg.executors)
        for cpu in cpus:
            params.cpumask[cpu] = True
        if placement.strict and 0 < len(cpus) < n_threads:
            log.warning("executor %d: --cpu-strict with %d threads on %d CPUs: some CPUs run two threads",
                        executor_id, n_threads, len(cpus))
        params.n_threads = n_threads
        params.prio = placement.prio if realtime or placement.prio < REALTIME_FROM else 0
        params.poll = placement.poll
        params.strict_cpu = placement.strict
        return params

    def close(self) -> None:
        for pool in self.pools:
            self._lib.ggml_threadpool_free(pool)
        self.pools = []


def describe(params: _ThreadpoolParams) -> str:
    cpus = ",".join(str(cpu) for cpu in range(GGML_MAX_N_THREADS) if params.cpumask[cpu]) or "any CPU"
    return (f"{params.n_threads} on {cpus}{' (strict)' if params.strict_cpu else ''}, prio {params.prio}, "
            f"poll {params.poll}")
