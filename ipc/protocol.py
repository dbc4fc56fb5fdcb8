"""Every message that crosses a process boundary in ggserve, and nothing else.

Reading this module explains the system:

    frontend --AddRequest/EmbedRequest/VectorsRead/Abort/Hello/Heartbeat/StatsRequest/SlotAction/SetLoraScales--> scheduler
    frontend <--RequestOutputs/EngineInfo/EngineStatus/EngineStats/SlotActionDone-- scheduler
    scheduler --StepPlan/EmbedPlan/Shutdown--> executor
    scheduler <--ExecutorReady/StepResult/EmbedResult/ExecutorError-- executor
    launcher --Hello/ExecutorDied/Drain/Shutdown/Restarts--> scheduler
    launcher <--EngineInfo/EngineStatus/RestartExecutor/Drained-- scheduler
    frontend --Hello/Heartbeat/LoadModel/UnloadModel/ModelUsed--> launcher   (router mode)
    frontend <--ModelTable-- launcher                                         (router mode)
    frontend --StreamRead/StreamLookup/StreamCancel--> frontend              (resumable streams)
    frontend <--StreamOpened/StreamBytes/StreamSessions/StreamCancelled-- frontend

Liveness: the scheduler sends EngineStatus to every peer that said Hello a few times a second;
a frontend that hears nothing for a while fails its requests and reconnects. Frontend workers
send Heartbeat; the scheduler aborts the requests of a worker that stops sending it.

All messages are msgspec Structs encoded as msgpack arrays (``array_like``), tagged so one
decoder reads the union. ``gc=False`` keeps these short-lived, acyclic objects out of the cyclic
garbage collector. Bulk arrays go through ``ipc.shm``: messages carry ``ArrayRef`` handles.
Embedding vectors (``Vectors``) sit in the executor's arena; the frontend copies its request's
rows out and says VectorsRead, and the scheduler gives regions nobody reads any more back to the
executor with its next EmbedPlan (scheduler.embedding.vector_regions). The rows travel inside the messages
only as the fallback: the arena is full, or a process is remote (tcp://).
"""

from __future__ import annotations

import enum
import math
from typing import Union

import msgspec


class _Msg(msgspec.Struct, tag=True, array_like=True, omit_defaults=True, gc=False):
    """Base of every wire message."""


class _Part(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """Base of structs nested inside messages (untagged)."""


# ----------------------------------------------------------------------------- shared parts


class FinishReason(enum.IntEnum):
    """Why a request ended; ``str()`` gives the OpenAI spelling."""

    STOP = 0  # end-of-generation token, stop token or stop string
    LENGTH = 1  # max_tokens or the slot's context reached
    ABORT = 2  # client went away or asked to stop
    ERROR = 3  # the engine failed the request; see RequestOutput.error

    def __str__(self) -> str:
        return self.name.lower()


class ErrorCode(enum.IntEnum):
    """Engine-side failure classes; the frontend maps them to HTTP statuses."""

    INVALID_REQUEST = 0  # 400: the request cannot run (e.g. longer than a slot's context)
    OVERLOADED = 1  # 503: the waiting queue is full
    EXECUTOR_FAILED = 2  # 503: the process running the request died, hung or failed its step
    SHUTTING_DOWN = 3  # 503: the server is stopping
    INTERNAL = 4  # 500: a bug
    NO_KV_ROOM = 5  # 503: the KV cache cannot hold the request's next tokens
    SLOT_BUSY = 6  # 409: the slot runs a request (a slot action needs it idle)
    NOT_FOUND = 7  # 404: a file the request names does not exist
    PEER_FORGOTTEN = 8  # 503: the frontend worker was silent too long; the engine dropped its requests


class EngineError(_Part):
    code: ErrorCode
    message: str


class ArrayRef(_Part):
    """Handle of a numpy array stored in a shared-memory arena (see ipc.shm)."""

    segment: str  # shared memory name
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]


class Vectors(_Part):
    """Float32 rows (embeddings, per-token embeddings or rerank scores); ``counts[i]`` rows belong
    to the i-th input (1 when pooled, its token count with pooling none). An input's rows are
    ``where[i] = (r, first)``: rows first .. first + counts[i] of the arena array ``regions[r]``
    (an (n, dim) float32 array), or, with r = -1 (and when ``where`` is empty), the input's turn
    in ``data``: the fallback, every such input's rows back to back in input order."""

    dim: int
    counts: list[int]
    data: bytes = b""  # little-endian float32 rows of the inputs not in shared memory
    regions: list[ArrayRef] = []
    where: list[tuple[int, int]] = []  # per input; empty: every input is in ``data``


# llama-server's default order of the samplers between the logit bias and the final pick.
DEFAULT_SAMPLER_ORDER = ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature")


class ReasoningBudget(_Part):
    """End the thinking after ``tokens`` generated inside it by forcing ``forced`` (the first
    closing tag's token ids, after an optional message). The tags are matched on the generated
    text, not on token ids, since a model (or a grammar) may spell a tag with other tokens."""

    # >= 0: thinking tokens allowed (0: close the thinking as soon as it opens); -1: no limit
    # (with ``control``, only an EndReasoning ends it)
    tokens: int
    start: str  # text opening the thinking ("<think>")
    ends: list[str]  # texts closing it ("</think>"); any of them ends the thinking
    forced: list[int]  # token ids forced once the budget is spent
    open: bool = False  # the prompt already opened the thinking (the template wrote ``start``)
    control: bool = False  # llama-server's reasoning_control: an EndReasoning may end the thinking early


class GrammarTriggers(_Part):
    """A lazy grammar (llama-server's ``grammar_lazy``): the output is free until a trigger
    appears in it, and follows the grammar from the trigger on."""

    # Regexes searched in the generated text; the grammar starts at the first non-empty group of
    # the match, else at the match. "^...$" must match the whole text (pattern_full).
    patterns: list[str] = []
    tokens: list[int] = []  # generating one of these tokens triggers; the grammar starts with it


class SamplingParams(_Part):
    """How the next token is chosen. Defaults are neutral; the frontend applies API defaults.

    ``temperature <= 0`` means greedy. ``seed`` of None means a random seed.
    """

    temperature: float = 1.0
    top_k: int = 0  # <= 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: list[tuple[int, float]] = []  # a bias of -inf bans the token
    seed: int | None = None
    grammar: str | None = None  # GBNF, root rule "root"
    grammar_triggers: GrammarTriggers | None = None  # the grammar is lazy: it applies from a trigger on
    # token sequences the output never contains (vLLM's bad_words): a sequence's last token is
    # banned where the tokens generated just before it are the rest of it
    banned_sequences: list[list[int]] = []
    # llama.cpp's other samplers, with llama-server's meanings and neutral defaults
    min_keep: int = 0  # truncating samplers keep at least this many candidates
    top_n_sigma: float = -1.0  # <= 0: off
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1  # > 0.5: off
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    mirostat: int = 0  # 0: off; 1, 2: Mirostat v1 / v2 (replace the truncating samplers)
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dry_multiplier: float = 0.0  # 0: DRY off
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 64  # 0: off
    dry_sequence_breakers: list[str] = msgspec.field(default_factory=lambda: ["\n", ":", "\"", "*"])
    adaptive_target: float = -1.0  # adaptive-p (only when "adaptive_p" is in ``samplers``)
    adaptive_decay: float = 0.9
    # Order of the samplers between the logit bias and the final pick (llama-server's names:
    # penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature, infill, adaptive_p).
    samplers: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_SAMPLER_ORDER))
    # The sampled token's TokenLogprob holds probabilities after the chain (llama-server's
    # post_sampling_probs: the distribution the token was drawn from), not raw log-probabilities.
    post_sampling_probs: bool = False
    reasoning_budget: ReasoningBudget | None = None


class LoraScale(_Part):
    """The scale of one LoRA adapter; ``id`` is its index in the order the adapters were given at
    start (--lora / --lora-scaled), as GET /lora-adapters numbers them."""

    id: int
    scale: float  # llama.cpp takes a float32: see valid_scale


FLOAT32_MAX = 3.4028234663852886e38


def valid_scale(scale: float) -> bool:
    """Whether a LoRA scale is a number llama.cpp's float32 holds (not NaN, no overflow to inf)."""
    return math.isfinite(scale) and abs(scale) <= FLOAT32_MAX


class LoraAdapterInfo(_Part):
    """A LoRA adapter an executor loaded, with llama-server's metadata of it."""

    path: str
    task_name: str = ""  # adapter.lora.task_name
    prompt_prefix: str = ""  # adapter.lora.prompt_prefix


class TokenLogprob(_Part):
    """Log-probability of the chosen token and the ``top`` most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = []
    rank: int = 0  # of a prompt token: 1 + how many tokens were more likely (0 for generated tokens)


class RequestStats(_Part):
    """Per-request accounting, sent with the final output."""

    n_prompt_tokens: int
    n_cached_tokens: int  # prompt tokens reused from the prefix cache (not evaluated)
    n_evaluated_prompt_tokens: int  # prompt tokens actually run through the model
    n_generated_tokens: int
    queue_ms: float  # arrival at the scheduler -> slot assigned
    prefill_ms: float  # slot assigned -> first token sampled
    decode_ms: float  # first token -> last token
    executor_id: int = -1
    slot_id: int = -1
    # The request filled its context: it was shifted (context shift) or its output stopped there
    # (llama-server's ``truncated``).
    truncated: bool = False
    n_draft_tokens: int = 0  # speculative decoding: draft tokens verified for it
    n_draft_accepted: int = 0  # of them, accepted (each an output token gained without a step)


# ----------------------------------------------------------------------------- frontend <-> scheduler


class Speculation(_Part):
    """A request's speculative decoding settings (llama-server's ``speculative.*`` fields); None
    in a field: the server's (--spec-draft-n-max, --spec-draft-n-min, --spec-draft-p-min)."""

    n_max: int | None = None  # draft tokens per step at most (0: no speculation for this request)
    n_min: int | None = None  # a shorter draft is not verified
    p_min: float | None = None  # draft model: stop drafting below this probability of its pick


class MediaChunk(_Part):
    """An image or audio clip of a prompt (multimodal models, ``--mmproj``). In
    ``prompt_token_ids`` its ``n_tokens`` positions from ``start`` hold ``media_token_id(sha256)``
    (negative: never a vocabulary id), so the prefix cache matches media by content. Its file's
    bytes are in the frontend's shared-memory arena (``data``), never in the message. A
    BatchItem holds either text tokens or exactly one whole media chunk (scheduler.media)."""

    start: int  # index of its first position in the prompt
    n_tokens: int  # embeddings (= KV cells and prompt ids)
    sha256: str  # hex digest of the file's bytes
    data: ArrayRef  # the file (uint8), as the client sent it; the executor decodes it again
    # How far it advances the sequence's llama.cpp position: an M-RoPE image (Qwen2-VL) takes
    # max(rows, columns) of its grid, fewer than its cells; 0: n_tokens. The scheduler counts
    # cells; the executor maps them to positions (executor.media.positions).
    n_pos: int = 0
    # Which of its file's chunks this is: mtmd cuts audio into 30 s windows, a chunk each, in order.
    part: int = 0


def media_token_id(sha256: str) -> int:
    """The prompt id every position of a media chunk carries: negative, from its content hash.
    31 bits of it, so ids stay int32 wherever tokens go: two different files with the same text
    before them share a cached prefix by mistake once in 2**31 pairs."""
    return -1 - int(sha256[:8], 16) % (2**31 - 1)


class AddRequest(_Msg):
    """A new generation request. The prompt is already tokenized by the frontend."""

    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int  # -1: until the slot's context is full
    sampling: SamplingParams = msgspec.field(default_factory=SamplingParams)
    stop_token_ids: list[int] = []
    # vLLM's min_tokens: the end-of-generation tokens and stop_token_ids cannot be sampled until
    # this many tokens are out (the scheduler bans them in the sampler's logit bias until then)
    min_tokens: int = 0
    # vLLM's cache_salt: cached prefixes are reused only between requests of the same salt
    cache_salt: str = ""
    ignore_eos: bool = False
    logprobs: int = -1  # -1: none; 0: chosen token only; k: chosen + top k
    cache_prompt: bool = True  # allow prefix-cache reuse for this request
    arrival_time: float = 0.0  # time.time() at the frontend
    # -1: none; k >= 0: log-probability of every prompt token after the first (each given the
    # tokens before it), with the top k alternatives (``echo`` with ``logprobs``).
    prompt_logprobs: int = -1
    return_progress: bool = False  # send PromptProgress after each prefill step (llama-server's)
    # Run on this slot (executor_id * n_slots + slot index, as /slots numbers them), waiting for
    # it to be free; -1: wherever the policy places it (llama-server's id_slot).
    id_slot: int = -1
    # Context shift (when the engine has it on): leading tokens of the sequence kept when it fills
    # its context (the frontend resolves llama-server's n_keep: -1 the whole prompt, BOS counted),
    # and how many of the tokens after them are dropped (0: half of them).
    n_keep: int = 0
    n_discard: int = 0
    # Reuse chunks of at least this many tokens of a slot's cache past the shared prefix by
    # shifting their KV (llama-server's n_cache_reuse; models whose cache can shift); 0: off.
    n_cache_reuse: int = 0
    # LoRA adapters (llama-server's per-request ``lora``): None runs with the global scales (POST
    # /lora-adapters); a list runs these adapters at these scales and every other one at 0.
    lora: list[LoraScale] | None = None
    speculative: Speculation | None = None  # None: the server's settings
    media: list[MediaChunk] = []  # in prompt order (see MediaChunk)


class AddRequests(_Msg):
    """The engine requests of one API call (its n choices, its prompts): queued together, or
    all refused with the same error. A call of one request sends its AddRequest alone."""

    requests: list[AddRequest]


class EmbedRequest(_Msg):
    """Pool the hidden states of each input (an embedding server only): no sampling, no output
    tokens. Inputs are packed, one sequence each, into the same decodes as other requests'."""

    request_id: str
    inputs: list[list[int]]  # token ids, each run whole in one decode (never truncated)


class VectorsRead(_Msg):
    """The frontend is done with these embedding requests (it copied their vectors out of shared
    memory, or gave up on them): their arena regions may be reused. Sent once per request."""

    request_ids: list[str]


class Abort(_Msg):
    """Stop a request (client gone, stop string matched). Its slot is freed in the same step."""

    request_ids: list[str]
    # ABORT: the client went away; STOP or LENGTH: the frontend ended the output itself (a stop
    # string, a time limit), and the request counts as finished
    reason: FinishReason = FinishReason.ABORT


class SetLoraScales(_Msg):
    """POST /lora-adapters: the global scales of the LoRA adapters (those not listed: 0), used by
    every later request that names none. The frontend then asks for EngineStats, whose answer
    confirms the change (the scheduler reads one peer's messages in order)."""

    scales: list[LoraScale]


class Hello(_Msg):
    """A frontend worker (or the launcher) announces itself; answered with EngineInfo once ready."""

    peer: str


class Heartbeat(_Msg):
    """A frontend worker is alive (sent a few times a second)."""


class StatsRequest(_Msg):
    """Ask for the current EngineStats (for /slots, /metrics, tests)."""

    token: int = 0  # echoed back to match replies
    # Start a new throughput window after answering (a /metrics scrape: llama-server's
    # prompt_tokens_seconds and predicted_tokens_seconds average over the time between scrapes).
    reset_window: bool = False


class PromptProgress(_Part):
    """How far a request's prefill is, after one step (llama-server's ``prompt_progress``)."""

    total: int  # prompt tokens
    cache: int  # of them reused from the prefix cache
    processed: int  # in the KV cache now (cached ones included)
    time_ms: int  # since the request got its slot


class RequestOutput(_Part):
    """New tokens of one request in one step; terminal when finish_reason is set."""

    request_id: str
    token_ids: list[int] = []
    logprobs: list[TokenLogprob] = []
    finish_reason: FinishReason | None = None
    error: EngineError | None = None
    stats: RequestStats | None = None
    prompt_logprobs: list[TokenLogprob] = []  # of the next prompt tokens (see AddRequest)
    progress: PromptProgress | None = None  # with AddRequest.return_progress, during the prefill
    vectors: Vectors | None = None  # an EmbedRequest's result, one entry per input, with its terminal output
    # with a request's first tokens: its prompt tokens reused from the prefix cache (-1: not said
    # here), so a stream's timings count them from the first chunk on
    n_cached_tokens: int = -1


class RequestOutputs(_Msg):
    """Everything one frontend worker gets from one scheduler step."""

    outputs: list[RequestOutput]


class ExecutorInfo(_Part):
    """What an executor loaded and how its KV cache is laid out."""

    executor_id: int
    model_path: str
    model_desc: str
    n_params: int
    model_size_bytes: int
    n_vocab: int
    n_ctx: int  # total KV cells of the context
    n_ctx_train: int
    n_swa: int  # sliding-window size (0: none)
    n_slots: int  # sequences (n_seq_max)
    n_batch: int
    kv_bytes: int  # memory held by the KV cache
    eog_token_ids: list[int] = []
    bos_token_id: int = -1
    device: str = "cpu"
    pid: int = 0  # the executor process: tells a restarted executor from its predecessor
    n_embd: int = 0  # embedding width (llama-server's /v1/models meta)
    vocab_type: int = 0  # llama_vocab_type: 1 SPM, 2 BPE, 3 WPM, 4 UGM, 5 RWKV
    can_shift: bool = False  # llama_memory_can_shift: positions can move (not a sliding-window cache)
    # -1: a generation server; else an embedding server's llama_pooling_type (0 none, 1 mean,
    # 2 cls, 3 last, 4 rank): it runs EmbedPlans only.
    pooling: int = -1
    # The shared-memory arena its vectors go through (ipc.shm), one per process incarnation;
    # "": none (a generation server, or remote processes): vectors travel in the messages.
    arena: str = ""
    lora_adapters: list[LoraAdapterInfo] = []  # in id order (--lora / --lora-scaled)
    n_ubatch: int = 0  # a media chunk is decoded whole in one micro-batch: at most this many embeddings
    vision: bool = False  # --mmproj loaded with an image encoder
    audio: bool = False  # ... with an audio encoder
    # A host-memory save's time per run of a sequence's cells, timed once at start-up (0: not
    # timed: no host cache, or a single slot); the scheduler's estimate until saves are timed.
    save_run_seconds: float = 0.0
    # The start-up save's bytes per token (0: not measured): every layer's cells of a short prefix,
    # so on a sliding-window model more than the KV cache's bytes per cell (whose window layers
    # hold fewer cells than -c): what --cache-ram entries are counted with
    save_bytes_per_token: float = 0.0


class EngineInfo(_Msg):
    """Answer to Hello: the engine is ready; static facts for /props, /v1/models, limits."""

    model_path: str
    model_alias: str
    n_ctx: int  # per executor
    n_ctx_slot: int  # max tokens (prompt + generated) of one request
    n_slots: int  # slots per executor
    n_executors: int
    n_batch: int
    max_queue: int
    epoch: int  # random per scheduler process: a different one means the scheduler was replaced
    executors: list[ExecutorInfo] = []
    # A request may generate past n_ctx_slot: its context is shifted (--context-shift, on a model
    # whose cache can shift); otherwise it stops there.
    context_shift: bool = False
    speculative: str = ""  # --spec-type ("": none)


class EngineStatus(_Msg):
    """The scheduler's pulse, sent to every peer a few times a second."""

    epoch: int  # the scheduler's, as in EngineInfo
    n_executors_ready: int  # executors that can run requests now (0: all restarting)
    draining: bool = False  # stopping: new requests are refused, running ones finish
    n_requests: int = 0  # running and waiting: 0 means idle (the launcher's sleep and LRU clocks)


class SlotState(_Part):
    """One slot; the request fields describe the running request, or the last one when idle."""

    slot_id: int
    executor_id: int
    busy: bool
    request_id: str = ""
    n_cached_tokens: int = 0  # tokens of the slot held in the KV cache
    n_prompt_tokens: int = 0
    n_generated_tokens: int = 0
    n_prompt_tokens_cached: int = 0  # prompt tokens of the request reused from the prefix cache
    n_prompt_tokens_processed: int = 0  # prompt tokens of the request evaluated so far
    max_tokens: int = 0  # the request's limit on generated tokens
    sampling: SamplingParams | None = None  # of the request (None: the slot never ran one)
    ignore_eos: bool = False
    logprobs: int = -1


class ExecutorStats(_Part):
    """One executor's counters since the scheduler started; they go on across its restarts."""

    executor_id: int
    ready: bool  # running requests now (False while it restarts)
    n_slots: int
    n_busy_slots: int
    n_ctx: int  # KV cells of its context
    kv_tokens: int  # KV cells in use (a prefix copied between sequences counts once; scheduler.cache.kv)
    steps_total: int  # llama_decode calls
    step_seconds_total: float
    prompt_tokens_total: int  # prompt tokens evaluated (cache hits excluded)
    prompt_seconds_total: float  # the prompt tokens' share of step time
    prompt_tokens_cached_total: int  # prompt tokens reused from the prefix cache
    tokens_predicted_total: int  # generated tokens of finished requests
    busy_slots_total: int  # slots running a request, summed over steps (/ steps: busy slots per decode)


class ChildRestarts(_Part):
    process: str  # "scheduler", "frontend", "executor-<id>"
    count: int


class EngineStats(_Msg):
    """Live counters: slots, queue, totals since start (monotonic counters for Prometheus)."""

    token: int
    slots: list[SlotState]
    n_waiting: int
    n_running: int
    requests_finished: int
    requests_aborted: int
    requests_failed: int
    requests_rejected: int
    executors: list[ExecutorStats] = []
    tokens_predicted_seconds_total: float = 0.0  # first to last token, summed over finished requests
    n_tokens_max: int = 0  # longest sequence (prompt + generated) seen in a slot
    # Throughput since the last window reset (llama-server's gauges): prompt tokens per second
    # of prompt time, and decode steps per second of generation time.
    prompt_tokens_per_second: float = 0.0
    predicted_tokens_per_second: float = 0.0
    restarts: list[ChildRestarts] = []  # as the launcher counts them
    started_at: float = 0.0  # unix time the scheduler started
    preemptions_total: int = 0  # requests preempted for KV room (recomputed later)
    # embedding steps whose vectors came inside the message although the executor has an arena
    # (it was full): slower to carry (docs/benchmarks.md), not an error
    vectors_inline_total: int = 0
    steps_planned_ahead_total: int = 0  # decode steps planned before the running one's result
    lora_scales: list[float] = []  # the global scale of each LoRA adapter, by id (GET /lora-adapters)
    # speculative decoding (llama-server's spec_decode_* counters): draft tokens verified, accepted,
    # verifications (a draft of a request in a step), and accepted tokens by draft position
    spec_draft_tokens_total: int = 0
    spec_accepted_tokens_total: int = 0
    spec_drafts_total: int = 0
    spec_accepted_per_pos: list[int] = []


class SlotActionKind(enum.IntEnum):
    SAVE = 0  # write the slot's cached tokens and their KV cells to ``path``
    RESTORE = 1  # replace the slot's cache with the file's
    ERASE = 2  # drop the slot's cached prefix


class SlotAction(_Msg):
    """llama-server's ``POST /slots/{id}?action=...`` on an idle slot; answered by SlotActionDone."""

    token: int  # echoed back to match the reply
    kind: SlotActionKind
    id_slot: int  # executor_id * n_slots + slot index, as /slots numbers them
    path: str = ""  # SAVE / RESTORE: the file, inside --slot-save-path
    n_tokens: int = 0  # RESTORE: tokens the file's header announces (the KV cells to make room for)


class EndReasoning(_Msg):
    """llama-server's ``POST /v1/chat/completions/control`` with ``reasoning_end``: end the thinking
    of the running choices of frontend request ``request_id`` (engine ids ``<request_id>-<k>``),
    as if their reasoning budget were spent; answered by EndReasoningDone."""

    token: int  # echoed back to match the reply
    request_id: str


class EndReasoningDone(_Msg):
    token: int
    ended: int = 0  # choices whose thinking ends at their next step
    error: str = ""  # why none: no such running request, or it was not sent with reasoning_control


class SlotActionDone(_Msg):
    token: int
    n_tokens: int = 0  # tokens saved, restored or erased
    n_bytes: int = 0  # bytes written or read
    ms: float = 0.0  # time the executor spent on the file
    error: EngineError | None = None


# ----------------------------------------------------------------------------- scheduler <-> executor


class KvOpKind(enum.IntEnum):
    """A KV edit; its ``pos`` and counts are token indices of the sequence (see BatchItem)."""

    CLEAR = 0  # drop every cell of seq_id
    TRUNCATE = 1  # drop positions >= pos of seq_id
    COPY = 2  # share positions [0, pos) of src_seq_id into seq_id (seq_id must be empty)
    SAVE = 3  # keep seq_id's cells in host memory as entry_id (--cache-ram)
    RESTORE = 4  # load host entry entry_id into seq_id (empty); a failure fails its request
    DROP = 5  # forget host entry entry_id
    # context shift: drop positions [pos, pos + n_discard) of seq_id and move the positions after
    # them down by n_discard (the cells must be seq_id's alone: a cell has one position)
    SHIFT = 6
    SAVE_FILE = 7  # write seq_id's cells, with ``tokens`` as their token ids, to ``path``
    LOAD_FILE = 8  # load ``path`` (at most ``pos`` tokens) into seq_id (emptied first)


class KvOp(_Part):
    kind: KvOpKind
    seq_id: int = -1
    pos: int = 0
    src_seq_id: int = -1
    entry_id: int = 0  # SAVE / RESTORE / DROP
    n_discard: int = 0  # SHIFT
    path: str = ""  # SAVE_FILE / LOAD_FILE
    tokens: list[int] = []  # SAVE_FILE


class SeqStart(_Part):
    """A request starts on a sequence: build its sampler chain."""

    seq_id: int
    sampling: SamplingParams
    logprobs: int = -1
    # Already-generated tokens to feed the penalty sampler (none for a fresh request).
    history: list[int] = []
    prompt_logprobs: int = -1  # top-k alternatives reported with logprob_targets (see BatchItem)
    # The prompt's last tokens, fed to the repetition samplers (penalties, DRY) before the output:
    # they penalise repeating the prompt too, as llama-server's do. Not fed to the grammar.
    penalty_context: list[int] = []
    draft_p_min: float = 0.0  # the draft model stops drafting for it below this probability
    media: list[MediaChunk] = []  # the request's media: an item at a chunk's start decodes it


class BatchItem(_Part):
    """Tokens of one sequence in this step's batch, at positions pos, pos+1, ... (indices in the
    sequence's tokens, as every position the scheduler sends: llama.cpp's own differ after an
    M-RoPE image, see MediaChunk.n_pos)"""

    seq_id: int
    token_ids: list[int]
    pos: int
    sample: bool  # sample a token from the logits of the last token
    # Report, for the first len(logprob_targets) tokens, the log-probability that the next token
    # is logprob_targets[j] (prompt log-probabilities).
    logprob_targets: list[int] = []
    # Speculative decoding: the last ``draft`` tokens are a draft to verify (``sample`` is set):
    # the executor samples at each of the last draft + 1 positions in order, accepting a draft
    # token while the sample equals it, and stops at the first sample that differs.
    draft: int = 0
    # With a draft model: the executor drafts up to this many tokens after ``token_ids`` (one
    # pending token) itself, appends them and verifies them as above (Sample.drafted says which).
    draft_model: int = 0
    # Asynchronous scheduling: planned before the previous step's result, this item's one token
    # (``token_ids`` empty) is the one the previous step sampled for the sequence. If that step did
    # not run (no KV room, an error), the executor refuses this step too (``no_kv_room``).
    follows: bool = False


class StepPlan(_Msg):
    """One llama_decode: KV edits first, then the batch; at most n_batch tokens."""

    step_id: int
    kv_ops: list[KvOp] = []
    starts: list[SeqStart] = []
    ends: list[int] = []  # seq ids whose sampler chains are freed (before kv_ops)
    items: list[BatchItem] = []
    # Set the context's LoRA adapters to these (every other one at 0) before the decode: a step
    # runs one adapter set. None: the set of the previous step (sent only when it changes).
    lora: list[LoraScale] | None = None
    # seq ids whose thinking ends now (EndReasoning): from this step on their budget forces the
    # closing tag, as when it is spent
    end_reasoning: list[int] = []


class Sample(_Part):
    """The token sampled for a sequence. After a draft (BatchItem.draft), the first
    ``n_accepted`` draft tokens were accepted and ``token_id`` was sampled after them; the
    sampler state has advanced over exactly these tokens; ``accepted_logprobs`` are those of the
    accepted draft tokens (when the request wants log-probabilities)."""

    seq_id: int
    token_id: int
    logprob: TokenLogprob | None = None
    n_accepted: int = 0
    accepted_logprobs: list[TokenLogprob] = []
    drafted: list[int] = []  # BatchItem.draft_model: the tokens the draft model proposed


class PromptLogprobs(_Part):
    seq_id: int
    logprobs: list[TokenLogprob]


class SeqFailure(_Part):
    """A sequence of the step failed alone (its sampler could not be built or sample, or its
    batch item was invalid); its request ends with ``error``, the other sequences go on."""

    seq_id: int
    error: EngineError


class SlotFileResult(_Part):
    """What a SAVE_FILE or LOAD_FILE op of the step did, in op order."""

    seq_id: int
    n_bytes: int = 0  # written or read
    ms: float = 0.0
    tokens: list[int] = []  # LOAD_FILE: the token ids the sequence now holds
    error: EngineError | None = None  # the op failed (a failed load leaves the sequence empty)


class StepResult(_Msg):
    """Sampled tokens of a StepPlan, in item order, plus cache facts the scheduler plans with."""

    step_id: int
    executor_id: int
    samples: list[Sample] = []
    # llama_memory_seq_pos_min of every sequence after the step, as a token index (-1: empty;
    # executor.media.positions maps it back after an M-RoPE picture). With sliding-window
    # attention a cached prefix of length q is reusable only if pos_min <= max(0, q - n_swa).
    pos_min: list[int] = []
    step_seconds: float = 0.0
    error: str | None = None  # the decode failed; the step's sequences are lost
    prompt_logprobs: list[PromptLogprobs] = []  # one per item with logprob_targets
    failures: list[SeqFailure] = []  # sequences whose items did not run
    # llama_decode found no room in the KV cache (it returned 1): nothing of the batch ran and
    # the cache is as before the step; the scheduler retries with fewer tokens.
    no_kv_room: bool = False
    slot_files: list[SlotFileResult] = []
    draft_seconds: float = 0.0  # of step_seconds, the draft model's share
    save_seconds: float = 0.0  # of step_seconds, the SAVE ops' share (prefixes copied to host memory)


class EmbedItem(_Part):
    """One input of an EmbedRequest on its own sequence, all of it, from position 0."""

    seq_id: int
    token_ids: list[int]


class EmbedPlan(_Msg):
    """One llama_decode of whole inputs (an embedding server's step); every sequence is cleared
    after its vectors are read. ``releases``: arena regions of earlier steps nobody reads any
    more, freed before this step writes its own (a region is needed only when a step writes)."""

    step_id: int
    items: list[EmbedItem]
    releases: list[ArrayRef] = []


class EmbedResult(_Msg):
    """The vectors of an EmbedPlan, in item order (``counts`` per item; 0 for a failed item)."""

    step_id: int
    executor_id: int
    vectors: Vectors | None = None  # None when the decode failed
    step_seconds: float = 0.0
    error: str | None = None  # the decode failed; none of the items has vectors
    failures: list[SeqFailure] = []  # items that did not run


class ExecutorReady(_Msg):
    info: ExecutorInfo


class ExecutorError(_Msg):
    """An executor failed to start or hit an unrecoverable error."""

    executor_id: int
    message: str


class ExecutorDied(_Msg):
    """The launcher saw an executor process exit."""

    executor_id: int
    pid: int  # of the process that exited (ignored if a newer one already reported ready)
    message: str


class RestartExecutor(_Msg):
    """The scheduler asks the launcher to kill and restart a hung executor (--step-timeout)."""

    executor_id: int
    pid: int
    message: str


class Drain(_Msg):
    """Stop taking requests; let the running and queued ones finish for up to ``timeout_s``."""

    timeout_s: float


class Drained(_Msg):
    """Every request has ended; ``n_cut_short`` were ended with an error at the deadline."""

    n_cut_short: int


class Shutdown(_Msg):
    reason: str = ""


class Restarts(_Msg):
    """The launcher's count of restarts per process, sent after each restart (and to a new
    scheduler after its Hello): the scheduler reports them in EngineStats."""

    counts: list[ChildRestarts]


# ----------------------------------------------------------------------------- router mode
# Several models, each its own engine (scheduler + executors), under one launcher and one
# frontend. The launcher binds a ROUTER socket (``models_endpoint``); every HTTP worker connects
# a DEALER, says Hello and Heartbeat, and receives the ModelTable on every change and a few times
# a second. A worker connects an EngineClient to a model's scheduler while the table says loaded.


class ModelStatus(enum.IntEnum):
    """Where a model's engine is; ``str()`` gives llama-server's spelling."""

    UNLOADED = 0
    LOADING = 1
    LOADED = 2
    SLEEPING = 3  # unloaded after --sleep-idle-seconds; the next request loads it again

    def __str__(self) -> str:
        return self.name.lower()


class ModelEntry(_Part):
    """One model of the router's table."""

    name: str  # the API's model id
    path: str  # the GGUF (first shard of a split)
    status: ModelStatus
    aliases: list[str] = []  # other names requests may give it
    tags: list[str] = []  # informational, shown in /v1/models
    config_path: str = ""  # the model engine's ServeConfig JSON (its scheduler endpoint inside)
    load_id: int = 0  # counts this model's loads: a new one means a new engine to connect to
    failed: bool = False  # the last load failed (status UNLOADED)
    error: str = ""  # why it failed, or why it was unloaded
    n_slots: int = 0  # slots per executor as configured
    n_ctx: int = 0  # KV cells per executor as configured
    args: list[str] = []  # the flags that differ from the server's (llama-server's status.args)
    memory_bytes: int = 0  # its estimated footprint under --models-memory (0: no budget)


class ModelTable(_Msg):
    """Every model the router serves, with its status."""

    models: list[ModelEntry]


class LoadModel(_Msg):
    """Load a model (a request for it arrived with autoload, or POST /models/load)."""

    name: str


class UnloadModel(_Msg):
    name: str


class ModelUsed(_Msg):
    """A request for this model arrived: its idle clock restarts (LRU and sleep)."""

    name: str


# ----------------------------------------------------------------------------- resumable streams
# A stream with ``X-Conversation-Id`` is recorded in the HTTP worker that runs it; a GET, DELETE or
# lookup may reach another worker, which asks its peers over their unix sockets in the run
# directory (frontend.streams.peers): one request per connection, answered by one message, or by
# StreamOpened and then StreamBytes until the stream ends (the connection closes).


class StreamRead(_Msg):
    """Send the recorded bytes of a conversation's stream from ``offset`` on, then follow it."""

    conversation_id: str
    offset: int


class StreamReadStatus(enum.IntEnum):
    OK = 0  # StreamBytes follow
    NOT_FOUND = 1  # no such stream in this worker
    OFFSET_LOST = 2  # the offset lies before the bytes still kept (the record is bounded)


class StreamOpened(_Msg):
    status: StreamReadStatus


class StreamBytes(_Msg):
    data: bytes


class StreamLookup(_Msg):
    """Which of these conversations (or ``<id>::<model>`` variants) have a stream here?"""

    conversation_ids: list[str]


class StreamInfo(_Part):
    """One recorded stream, as llama-server's /v1/streams/lookup describes it."""

    conversation_id: str
    is_done: bool
    total_bytes: int
    started_at: int  # unix seconds
    completed_at: int  # unix seconds; 0 while it runs


class StreamSessions(_Msg):
    sessions: list[StreamInfo]


class StreamCancel(_Msg):
    """Stop a conversation's stream (its generation is aborted) and forget its record."""

    conversation_id: str


class StreamCancelled(_Msg):
    found: bool


Message = Union[
    AddRequest,
    AddRequests,
    EmbedRequest,
    VectorsRead,
    Abort,
    Hello,
    Heartbeat,
    StatsRequest,
    SlotAction,
    SlotActionDone,
    EndReasoning,
    EndReasoningDone,
    SetLoraScales,
    RequestOutputs,
    EngineInfo,
    EngineStatus,
    EngineStats,
    StepPlan,
    StepResult,
    EmbedPlan,
    EmbedResult,
    ExecutorReady,
    ExecutorError,
    ExecutorDied,
    RestartExecutor,
    Drain,
    Drained,
    Shutdown,
    Restarts,
    ModelTable,
    LoadModel,
    UnloadModel,
    ModelUsed,
    StreamRead,
    StreamOpened,
    StreamBytes,
    StreamLookup,
    StreamSessions,
    StreamCancel,
    StreamCancelled,
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes | memoryview) -> Message:
    """Decode one message; any malformed frame raises msgspec.DecodeError."""
    try:
        return _decoder.decode(data)
    except UnicodeDecodeError as exc:  # msgspec lets this escape for invalid UTF-8 in strings
        raise msgspec.DecodeError(f"invalid UTF-8 in a string: {exc}") from exc
