"""The executor's model: one llama_model + one llama_context, and the step that runs a StepPlan.

Everything that decides *what* to run lives in the scheduler; this module only applies KV edits,
decodes one batch and samples. It validates every plan first, because llama.cpp aborts the whole
process (GGML_ABORT) on some invalid batches and an abort is a dead executor, not an exception.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time

import llama_cpp
import numpy as np

from executor.state import slot_files
from executor.batch import BatchError, BatchLayout, NoKvRoom, NumpyBatch, item_problem
from executor.sampling.device import DeviceSampling
from executor.draft import DraftModel, SeqTokens
from executor.embedding.embedder import Embedder, tap_for
from executor.state.host_cache import HostCache
from ggserve.llama import kv_overrides
from ggserve.llama.log import LlamaLogCapture
from executor.model.lora import LoraAdapters
from executor.media.decoder import MediaDecoder
from executor.model.params import NUMA, context_params, model_params
from executor.model import control_vector, tensor_overrides
from executor.model.threadpool import ExecutorThreads
from executor.sampling.sequence import (
    SequenceFailed,
    SeqSampler,
    logits_view,
    sample_rows,
    target_logprobs,
    verify_draft,
)
from ggserve.config import ServeConfig
from ipc.protocol import (
    BatchItem,
    EmbedPlan,
    EmbedResult,
    EngineError,
    ErrorCode,
    ExecutorInfo,
    KvOp,
    KvOpKind,
    PromptLogprobs,
    Sample,
    SeqFailure,
    SeqStart,
    SlotFileResult,
    StepPlan,
    StepResult,
)
from ipc.shm import Arena

log = logging.getLogger("executor")

# Test-only fault injection: when this environment variable names a file and the file exists,
# the next step deletes it and never returns (a hung executor, for --step-timeout tests).
HANG_FILE_ENV = "GGSERVE_TEST_HANG_FILE"
SAVE_PROBE_RUNS = 8  # runs of cells in the start-up save that tells a save's cost per run
SAVE_PROBE_ENTRY = -1  # its host-cache entry (the scheduler's ids start at 1)


POOLING = {
    "": llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED,  # the GGUF's
    "none": llama_cpp.LLAMA_POOLING_TYPE_NONE,
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
    "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK,
}

FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


def _flash_attn(cfg: ServeConfig) -> str:
    """An embedding server runs without flash attention unless told otherwise: on the CPU,
    llama.cpp's flash attention takes another (tiled) kernel over the KV cache for long batches,
    and a text's vector alone and among 31 others then differs past the batch-invariance bound
    (cosine 0.9990, max 0.011 on Gemma 3 270M); without it, cosine >= 0.9998 and max <= 0.005 in
    the tests. Encoders that keep no KV cache (BERT and kin) get it back once their context shows
    so (``_encoder_context``)."""
    if cfg.embeddings and cfg.flash_attn == "auto":
        return "off"
    return cfg.flash_attn


def _encoder_context(model: llama_cpp.llama_model_p, ctx: llama_cpp.llama_context_p,
                     cparams: llama_cpp.llama_context_params, cfg: ServeConfig) -> llama_cpp.llama_context_p:
    """An embedding context with flash attention back on (auto) when it has no KV cache: an
    encoder's attention then runs over the batch's own rows, where flash attention stays batch-
    invariant (all-MiniLM-L6-v2: max difference 1e-4 alone vs among 31) and is 2-2.5x faster on
    full batches, as llama-server runs it; else ``ctx`` itself."""
    if not (cfg.embeddings and cfg.flash_attn == "auto") or llama_cpp.llama_get_memory(ctx):
        return ctx
    llama_cpp.llama_free(ctx)
    cparams.flash_attn_type = FLASH_ATTN["auto"]
    log.info("embeddings: an encoder without KV cache: flash attention as llama.cpp chooses (auto)")
    return llama_cpp.llama_init_from_model(model, cparams)


def _load_progress(executor_id: int) -> llama_cpp.llama_progress_callback:
    """A llama.cpp callback that logs the model load at every quarter: a big model on a slow
    disk takes minutes, and an operator should see it move."""
    next_mark = 0.25

    def report(progress: float, _user: ctypes.c_void_p) -> bool:
        nonlocal next_mark
        if progress >= next_mark:
            log.info("executor %d: model %d%% loaded", executor_id, int(progress * 100))
            while next_mark <= progress:
                next_mark += 0.25
        return True  # go on loading

    return llama_cpp.llama_progress_callback(report)


def _sampling_error(exc: Exception) -> EngineError:
    """A sequence's sampling failure: the request's own doing (a grammar dead end), or a bug."""
    if isinstance(exc, SequenceFailed):
        return EngineError(ErrorCode.INVALID_REQUEST, str(exc))
    return EngineError(ErrorCode.INTERNAL, f"sampling failed: {exc!r}")


class ModelEngine:
    def __init__(self, cfg: ServeConfig, executor_id: int, arena: Arena | None = None) -> None:
        """``arena``: where an embedding server puts its vectors (None: inside the messages)."""
        self.executor_id = executor_id
        self._log_capture = LlamaLogCapture()
        llama_cpp.llama_backend_init()
        self.threads = ExecutorThreads(cfg, executor_id)

        llama_cpp.llama_numa_init(NUMA[cfg.numa])
        mparams = model_params(cfg)
        # the override arrays are referenced until the load returns
        kv = kv_overrides.apply(cfg.kv_overrides, mparams)
        tensors = tensor_overrides.apply(cfg.tensor_overrides, mparams)
        log.info("executor %d: loading %s", executor_id, cfg.model)
        t0 = time.monotonic()
        progress = _load_progress(executor_id)  # referenced until the load returns (ctypes callback)
        mparams.progress_callback = progress
        self.model = llama_cpp.llama_model_load_from_file(cfg.model.encode(), mparams)
        del progress, kv, tensors
        if not self.model:
            raise RuntimeError(f"failed to load model {cfg.model}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

        cparams = context_params(cfg, cfg.n_parallel)
        cparams.flash_attn_type = FLASH_ATTN[_flash_attn(cfg)]
        if cfg.backend_sampling and (cfg.spec_type or cfg.spec_draft_model):
            cparams.n_outputs_max_per_seq = 0  # a verified draft samples every row (0: no limit)
        if cfg.embeddings:
            cparams.embeddings = True
            cparams.pooling_type = POOLING[cfg.pooling]
            cparams.n_ubatch = cfg.batch_size  # a non-causal model needs each decode in one micro-batch
        tap = tap_for(self.model, cparams, self.n_vocab) if cfg.embeddings else None
        if tap is not None:
            cparams.cb_eval, cparams.cb_eval_user_data = tap.callback, None
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if self.ctx:
            self.ctx = _encoder_context(self.model, self.ctx, cparams, cfg)
        if not self.ctx:
            raise RuntimeError("failed to create the llama.cpp context (out of memory?)")
        self.pools = self.threads.attach(self.ctx)
        if cfg.control_vectors:
            control_vector.apply(self.ctx, self.model, cfg.control_vectors, *cfg.control_vector_layers)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_seq_max = llama_cpp.llama_n_seq_max(self.ctx)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self.batch = NumpyBatch(self.n_batch)
        self.samplers: dict[int, SeqSampler] = {}
        self.device = (DeviceSampling(self.ctx, self.vocab, self.n_vocab, not (cfg.spec_type or cfg.spec_draft_model))
                       if cfg.backend_sampling and not cfg.embeddings else None)
        if self.device is not None and not llama_cpp.llama_supports_gpu_offload():
            log.warning("executor %d: --backend-sampling on a CPU: llama.cpp's sampling there is slower than "
                        "the host path's", executor_id)
        # The tokens the last step sampled, by sequence: what a step planned behind it feeds
        # (BatchItem.follows); None when the last step did not run.
        self._last_samples: dict[int, int] | None = {}
        self.host_cache = HostCache(self.ctx)
        # at warm-up (info.save_run_seconds): the probe decodes two sequences
        self._times_a_save = cfg.cache_ram != 0 and not cfg.embeddings and self.n_seq_max >= 2
        self.embedder = (Embedder(self.model, self.ctx, self.batch, self.n_vocab, self.n_seq_max, arena, tap)
                         if cfg.embeddings else None)
        self.lora = LoraAdapters(self.model, self.ctx, [lora.path for lora in cfg.lora], self._log_capture)
        # speculative decoding with a draft model: the model, the target's tokens it follows, and
        # each sequence's p_min (SeqStart)
        self.draft = DraftModel(cfg, self.n_vocab, self.n_seq_max, self.threads) if cfg.spec_draft_model else None
        self.seq_tokens = SeqTokens(self.n_seq_max) if self.draft is not None else None
        self.draft_p_min: dict[int, float] = {}
        # --mmproj: images / audio in prompts (executor.media.decoder)
        self.media = (MediaDecoder(cfg.mmproj, self.model, self.ctx, cfg.mmproj_offload and cfg.n_gpu_layers != 0,
                                   cfg.n_threads, llama_cpp.llama_n_ubatch(self.ctx), cfg.image_tokens,
                                   cfg.mtmd_batch_max_tokens)
                      if cfg.mmproj and not cfg.embeddings else None)
        # M-RoPE: token index -> llama.cpp position of each sequence (None: they are equal)
        self.positions = self.media.positions if self.media is not None else None
        self.info = self._describe(cfg)
        self._hang_file = os.environ.get(HANG_FILE_ENV, "")
        if cfg.warmup:
            self._warm_up()
        log.info(
            "executor %d: loaded in %.1fs: %s, %d slots, n_ctx %d, KV %.1f MiB, device %s",
            executor_id,
            time.monotonic() - t0,
            self.info.model_desc,
            self.n_seq_max,
            self.info.n_ctx,
            self.info.kv_bytes / 2**20,
            self.info.device,
        )

    def _warm_up(self) -> None:
        """Decode one token and forget it, as llama-server does: the first decode allocates and
        pages in what every later one uses, and would otherwise stall the first real step. With
        a host cache, also time one save (``info.save_run_seconds``)."""
        token = max(0, self.info.bos_token_id)
        self.batch.fill([BatchItem(0, [token], 0, True)])
        if llama_cpp.llama_decode(self.ctx, self.batch.struct) != 0:
            raise RuntimeError("the warm-up decode failed")
        llama_cpp.llama_memory_clear(self.memory, True)
        if self._times_a_save:
            self.info.save_run_seconds, self.info.save_bytes_per_token = self._time_a_save(token)
            llama_cpp.llama_memory_clear(self.memory, True)

    def _time_a_save(self, token: int) -> tuple[float, float]:
        """A host-memory save's time per run of cells, and its bytes per token. Sequences 0 and 1
        decode SAVE_PROBE_RUNS tokens side by side, one each per step, so that each of sequence
        0's cells is a run of its own, as a prefix decoded among other sequences lies in the
        cache; then sequence 0 is saved as a SAVE op saves it. On a GPU each run and layer is a
        copy of its own, and without this the scheduler learns the cost from its first
        evictions' saves (on an H100 they stalled a step for 55 ms)."""
        for pos in range(SAVE_PROBE_RUNS):
            self.batch.fill([BatchItem(0, [token], pos, False), BatchItem(1, [token], pos, False)])
            if llama_cpp.llama_decode(self.ctx, self.batch.struct) != 0:
                raise RuntimeError("the warm-up decode failed")
        t0 = time.perf_counter()
        n_bytes = self.host_cache.save(0, SAVE_PROBE_ENTRY)
        seconds = time.perf_counter() - t0
        self.host_cache.drop(SAVE_PROBE_ENTRY)
        return seconds / SAVE_PROBE_RUNS, n_bytes / SAVE_PROBE_RUNS

    def _describe(self, cfg: ServeConfig) -> ExecutorInfo:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model, buf, len(buf))
        eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t)]
        gpu = llama_cpp.llama_supports_gpu_offload() and cfg.n_gpu_layers != 0
        return ExecutorInfo(
            executor_id=self.executor_id,
            model_path=cfg.model,
            model_desc=buf.value.decode(errors="replace"),
            n_params=llama_cpp.llama_model_n_params(self.model),
            model_size_bytes=llama_cpp.llama_model_size(self.model),
            n_vocab=self.n_vocab,
            n_ctx=llama_cpp.llama_n_ctx(self.ctx),
            n_ctx_train=llama_cpp.llama_model_n_ctx_train(self.model),
            n_swa=llama_cpp.llama_model_n_swa(self.model),
            n_slots=self.n_seq_max,
            n_batch=self.n_batch,
            kv_bytes=self._log_capture.kv_bytes,
            eog_token_ids=eog,
            bos_token_id=llama_cpp.llama_vocab_bos(self.vocab),
            device=f"gpu:{os.environ.get('CUDA_VISIBLE_DEVICES', '0')}" if gpu else "cpu",
            pid=os.getpid(),
            n_embd=llama_cpp.llama_model_n_embd(self.model),
            vocab_type=llama_cpp.llama_vocab_type(self.vocab),
            can_shift=llama_cpp.llama_memory_can_shift(self.memory),
            pooling=self.embedder.pooling if self.embedder is not None else -1,
            arena=self.embedder.arena.name if self.embedder is not None and self.embedder.arena is not None else "",
            lora_adapters=self.lora.info,
            n_ubatch=llama_cpp.llama_n_ubatch(self.ctx),
            vision=self.media is not None and self.media.info.vision,
            audio=self.media is not None and self.media.info.audio,
        )

    # ------------------------------------------------------------------ step

    def step(self, plan: StepPlan) -> StepResult:
        """Run one plan. A sequence that cannot run fails alone (``failures``); only a failed
        llama_decode loses the whole step."""
        t0 = time.perf_counter()
        if self._hang_file and os.path.exists(self._hang_file):
            os.unlink(self._hang_file)
            log.warning("executor %d: test hook %s: hanging in step %d", self.executor_id, HANG_FILE_ENV,
                        plan.step_id)
            while True:
                time.sleep(3600)
        failures: dict[int, EngineError] = {}
        files: list[SlotFileResult] = []
        samples: list[Sample] = []
        prompt_logprobs: list[PromptLogprobs] = []
        error = None
        no_kv_room = False
        self._draft_seconds = 0.0
        self._save_seconds = 0.0
        try:
            samples, prompt_logprobs = self._run(plan, failures, files)
        except NoKvRoom:
            no_kv_room = True
        except (BatchError, ValueError, RuntimeError) as exc:
            log.error("executor %d: step %d failed: %s", self.executor_id, plan.step_id, exc)
            error = str(exc)
        ran = not no_kv_room and error is None
        self._last_samples = {sample.seq_id: sample.token_id for sample in samples} if ran else None
        return StepResult(
            step_id=plan.step_id,
            executor_id=self.executor_id,
            samples=samples,
            pos_min=self._pos_min(),
            step_seconds=time.perf_counter() - t0,
            error=error,
            prompt_logprobs=prompt_logprobs,
            failures=[SeqFailure(seq, err) for seq, err in failures.items()],
            no_kv_room=no_kv_room,
            slot_files=files,
            draft_seconds=self._draft_seconds,
            save_seconds=self._save_seconds,
        )

    def embed(self, plan: EmbedPlan) -> EmbedResult:
        """Run an embedding server's step (the scheduler sends these to embedding servers only)."""
        if self.embedder is None:
            return EmbedResult(plan.step_id, self.executor_id, error="this executor does not compute embeddings")
        return self.embedder.step(plan, self.executor_id)

    def _run(
        self, plan: StepPlan, failures: dict[int, EngineError], files: list[SlotFileResult]
    ) -> tuple[list[Sample], list[PromptLogprobs]]:
        for seq in plan.ends:
            sampler = self.samplers.pop(seq, None)
            if sampler is not None:
                sampler.free()
        self._apply_kv_ops(plan, failures, files)
        for start in plan.starts:
            self._start(start, failures)
        if plan.lora is not None:  # before anything can return: the scheduler counts it as done
            self.lora.apply(plan.lora)
        for seq in plan.end_reasoning:
            sampler = self.samplers.get(seq)
            if sampler is not None and sampler.budget is not None:
                sampler.budget.end_now()
        items = self._followed(plan.items, failures)
        if self.media is not None:  # media chunks first, each in a decode of its own
            items = self.media.run(items, failures)
        items = self._runnable(items, failures)
        if not items:
            return [], []
        drafted: dict[int, list[int]] = {}
        if self.draft is not None:
            items, drafted = self._with_drafts(items)
        layout = self.batch.fill(items, self.positions.first_positions(items) if self.positions is not None else None)
        if self.seq_tokens is not None:
            for item in items:
                self.seq_tokens.write(item)
        sampled_items = [item for item in items if item.sample and not item.draft]
        drafted_items = [item for item in items if item.draft]
        samplers = [self.samplers[item.seq_id] for item in sampled_items]
        prompt_tops = [self.samplers[seq].prompt_logprobs for seq, _, _ in layout.spans]
        rc = llama_cpp.llama_decode(self.ctx, self.batch.struct)
        if rc == 1:
            if self.media is not None:  # the step runs again: none of it may stay in the cache
                self.media.undo()
            raise NoKvRoom()
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        if not layout.n_outputs:
            return [], []
        logits = logits_view(self.ctx, layout.n_outputs, self.n_vocab)  # rows of device-sampled sequences: stale
        prompt_logprobs = [
            PromptLogprobs(seq, target_logprobs(logits[row : row + len(targets)], targets, top, ranked=True))
            for (seq, row, targets), top in zip(layout.spans, prompt_tops)
        ]
        samples = self._verify(drafted_items, layout, logits, failures, drafted)
        if not samplers:
            return samples, prompt_logprobs
        failed: dict[int, Exception] = {}
        device = [self._device_tokens(item.seq_id, [row])
                  for item, row in zip(sampled_items, layout.sample_batch_rows)]
        tokens, logprobs = sample_rows(self.ctx, logits, layout.sample_batch_rows, samplers, failed,
                                       [None if d is None else d[0] for d in device], layout.sample_out_rows)
        for i, (item, token, lp) in enumerate(zip(sampled_items, tokens, logprobs)):
            if i in failed:
                exc = failed[i]
                log.warning("executor %d: sequence %d failed: %r", self.executor_id, item.seq_id, exc)
                failures[item.seq_id] = _sampling_error(exc)
            else:
                samples.append(Sample(seq_id=item.seq_id, token_id=token, logprob=lp))  # drafted nothing
        return samples, prompt_logprobs

    def _with_drafts(self, items: list[BatchItem]) -> tuple[list[BatchItem], dict[int, list[int]]]:
        """The items with the draft model's tokens appended where it was asked to draft (a
        sequence whose tokens are not known drafts nothing), and those tokens by sequence."""
        assert self.draft is not None and self.seq_tokens is not None
        wanted = []
        for item in items:
            held = self.seq_tokens.tokens[item.seq_id] if item.draft_model else None
            # (a negative id is media, which the draft model cannot read: such a sequence does not draft)
            if held is not None and len(held) == item.pos and (not held or min(held) >= 0):
                wanted.append((item.seq_id, held + item.token_ids, item.draft_model,
                               self.draft_p_min.get(item.seq_id, 0.0)))
        if not wanted:
            return items, {}
        drafts = self.draft.draft(wanted)
        self._draft_seconds = self.draft.seconds
        out = []
        for item in items:
            extra = drafts.get(item.seq_id, []) if item.draft_model else []
            out.append(BatchItem(item.seq_id, item.token_ids + extra, item.pos, item.sample, item.logprob_targets,
                                 len(extra)) if item.draft_model else item)
        return out, drafts

    def _verify(self, items: list[BatchItem], layout: BatchLayout, logits: np.ndarray,
                failures: dict[int, EngineError], drafted: dict[int, list[int]]) -> list[Sample]:
        """Verify each item's draft (executor.sampling.sequence.verify_draft); a sequence whose sampler
        fails fails alone. ``drafted``: the draft model's tokens, by sequence."""
        samples = []
        for item, (batch_row, out_row) in zip(items, layout.drafts):
            n_rows = item.draft + 1
            try:
                device = self._device_tokens(item.seq_id, list(range(batch_row, batch_row + n_rows)))
                tokens, logprobs = verify_draft(self.ctx, logits[out_row : out_row + n_rows], batch_row,
                                                item.token_ids[-item.draft :], self.samplers[item.seq_id], device)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it fails this sequence alone
                log.warning("executor %d: sequence %d failed: %r", self.executor_id, item.seq_id, exc)
                failures[item.seq_id] = _sampling_error(exc)
                continue
            accepted = [lp for lp in logprobs[:-1] if lp is not None]
            samples.append(Sample(item.seq_id, tokens[-1], logprobs[-1], len(tokens) - 1, accepted,
                                  drafted.get(item.seq_id, [])))
        return samples

    def _start(self, start: SeqStart, failures: dict[int, EngineError]) -> None:
        """Build the sampler chain of a request starting on ``start.seq_id``."""
        if not 0 <= start.seq_id < self.n_seq_max:
            failures[start.seq_id] = EngineError(ErrorCode.INTERNAL, f"sequence id {start.seq_id} out of range")
            return
        old = self.samplers.pop(start.seq_id, None)
        if old is not None:
            old.free()
        self.draft_p_min[start.seq_id] = start.draft_p_min
        try:
            sampler = self.samplers[start.seq_id] = SeqSampler(
                start.sampling, self.vocab, self.n_vocab, start.logprobs, start.history, start.prompt_logprobs,
                start.penalty_context,
            )
            if self.device is not None:
                self.device.set(start.seq_id, sampler.device_params, len(start.history))
        except SequenceFailed as exc:  # llama.cpp refused a parameter: this request fails alone
            failures[start.seq_id] = EngineError(ErrorCode.INVALID_REQUEST, str(exc))
            failed = self.samplers.pop(start.seq_id, None)
            if failed is not None:
                failed.free()
            if self.device is not None:
                self.device.set(start.seq_id, None)
        if self.media is not None:
            self.media.start(start.seq_id, start.media)

    def _device_tokens(self, seq_id: int, batch_rows: list[int]) -> list[int] | None:
        """The token the device sampled at each of these output rows of ``seq_id``, or None when
        the sequence samples on the host (executor.sampling.device)."""
        if self.device is None or not self.device.attached(seq_id):
            return None
        return [self.device.token(row) for row in batch_rows]

    def _followed(self, items: list[BatchItem], failures: dict[int, EngineError]) -> list[BatchItem]:
        """The items, those planned before the last step's result (``follows``) given the token
        it sampled for their sequence."""
        if not any(item.follows for item in items):
            return items
        if self._last_samples is None:
            raise NoKvRoom()  # it builds on a step that did not run; the scheduler undid both
        followed: list[BatchItem] = []
        for item in items:
            if item.follows:
                token = self._last_samples.get(item.seq_id)
                if token is None:  # its sampling failed last step (the scheduler ends it)
                    failures[item.seq_id] = EngineError(ErrorCode.INTERNAL, "the step before sampled no token")
                    continue
                item.token_ids = [token]
            followed.append(item)
        return followed

    def _runnable(self, items: list[BatchItem], failures: dict[int, EngineError]) -> list[BatchItem]:
        """The items that can be decoded; each other one becomes a failure of its sequence."""
        runnable: list[BatchItem] = []
        n_tokens = 0
        for item in items:
            if item.seq_id in failures:
                continue
            problem = item_problem(item, self.n_vocab, self.n_seq_max)
            if problem is None and item.seq_id not in self.samplers:
                problem = f"sequence {item.seq_id} has no sampler"
            if problem is None and item.draft_model and self.draft is None:
                problem = f"sequence {item.seq_id} asks for a draft but no draft model is loaded"
            if problem is None and n_tokens + len(item.token_ids) + item.draft_model > self.batch.capacity:
                problem = f"the plan has more than {self.batch.capacity} tokens"
            if problem is not None:
                log.error("executor %d: %s", self.executor_id, problem)
                failures[item.seq_id] = EngineError(ErrorCode.INTERNAL, f"invalid plan: {problem}")
                continue
            n_tokens += len(item.token_ids) + item.draft_model
            runnable.append(item)
        return runnable

    def _check_seq(self, seq_id: int) -> None:
        if not 0 <= seq_id < self.n_seq_max:
            raise BatchError(f"sequence id {seq_id} out of range")

    def _apply_kv_ops(self, plan: StepPlan, failures: dict[int, EngineError], files: list[SlotFileResult]) -> None:
        mem = self.memory
        for op in plan.kv_ops:
            if op.kind == KvOpKind.DROP:
                self.host_cache.drop(op.entry_id)
                self._follow(op)
                continue
            self._check_seq(op.seq_id)
            if op.pos < 0 or op.n_discard < 0:
                raise BatchError(f"negative position or count in a KV edit of sequence {op.seq_id}")
            if op.kind == KvOpKind.CLEAR:
                llama_cpp.llama_memory_seq_rm(mem, op.seq_id, -1, -1)
            elif op.kind == KvOpKind.TRUNCATE:
                llama_cpp.llama_memory_seq_rm(mem, op.seq_id, self._position(op.seq_id, op.pos), -1)
            elif op.kind == KvOpKind.COPY:
                self._check_seq(op.src_seq_id)
                llama_cpp.llama_memory_seq_rm(mem, op.seq_id, -1, -1)
                if op.src_seq_id in failures:  # its restore failed: there is no prefix to copy
                    failures[op.seq_id] = failures[op.src_seq_id]
                else:
                    llama_cpp.llama_memory_seq_cp(mem, op.src_seq_id, op.seq_id, 0,
                                                  self._position(op.src_seq_id, op.pos))
            elif op.kind == KvOpKind.SHIFT:
                # llama.cpp re-rotates the moved keys (RoPE) at the next llama_decode
                end = op.pos + op.n_discard
                llama_cpp.llama_memory_seq_rm(mem, op.seq_id, op.pos, end)
                llama_cpp.llama_memory_seq_add(mem, op.seq_id, end, -1, -op.n_discard)
            elif op.kind == KvOpKind.SAVE:
                t0 = time.perf_counter()
                self.host_cache.save(op.seq_id, op.entry_id)
                self._save_seconds += time.perf_counter() - t0
            elif op.kind == KvOpKind.RESTORE:
                llama_cpp.llama_memory_seq_rm(mem, op.seq_id, -1, -1)
                if not self.host_cache.restore(op.entry_id, op.seq_id):
                    failures[op.seq_id] = EngineError(ErrorCode.INTERNAL, "restoring a cached prefix failed")
            elif op.kind == KvOpKind.SAVE_FILE:
                files.append(slot_files.save(self.ctx, op.seq_id, op.path, op.tokens))
            elif op.kind == KvOpKind.LOAD_FILE:
                files.append(slot_files.load(self.ctx, mem, op.seq_id, op.path, op.pos, self.n_vocab))
                if self.seq_tokens is not None:
                    self.seq_tokens.set(op.seq_id, files[-1].tokens)
            self._follow(op)

    def _follow(self, op: KvOp) -> None:
        """What mirrors the sequences' cells (the draft's tokens, M-RoPE layouts) follows an edit."""
        if self.seq_tokens is not None:
            self.seq_tokens.apply(op)
        if self.positions is not None:
            self.positions.apply(op)

    def _position(self, seq_id: int, index: int) -> int:
        """llama.cpp's position of a sequence's token ``index`` (executor.media.positions); a bound inside
        a media chunk is a bad plan."""
        if self.positions is None:
            return index
        try:
            return self.positions.position(seq_id, index)
        except ValueError as exc:
            raise BatchError(f"a KV edit of sequence {seq_id}: {exc}") from None

    def _pos_min(self) -> list[int]:
        pos_min = [llama_cpp.llama_memory_seq_pos_min(self.memory, s) for s in range(self.n_seq_max)]
        return self.positions.indices(pos_min) if self.positions is not None else pos_min

    def close(self) -> None:
        if self.draft is not None:
            self.draft.close()
        for sampler in self.samplers.values():
            sampler.free()
        self.samplers.clear()
        if self.device is not None:
            self.device.close()
        if self.media is not None:
            self.media.close()
        llama_cpp.llama_free(self.ctx)
        if self.pools is not None:
            self.pools.close()
        llama_cpp.llama_model_free(self.model)
