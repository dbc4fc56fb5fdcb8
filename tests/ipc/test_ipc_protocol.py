"""Every protocol message survives encode/decode, garbage fails cleanly, and ZeroMQ carries them."""

from __future__ import annotations

import enum
import random
import tempfile
import typing

import msgspec
import pytest
import zmq

from ipc import protocol as p
from ipc import transport

SAMPLING = p.SamplingParams(
    temperature=0.7,
    top_k=40,
    top_p=0.9,
    min_p=0.05,
    typical_p=0.8,
    repeat_penalty=1.1,
    repeat_last_n=128,
    presence_penalty=0.5,
    frequency_penalty=0.25,
    logit_bias=[(13, -100.0), (7, 2.5)],
    seed=1234,
    grammar='root ::= "yes" | "no"',
    grammar_triggers=p.GrammarTriggers(patterns=["^go$"], tokens=[105]),
    banned_sequences=[[17], [5, 6]],
    min_keep=2,
    top_n_sigma=1.5,
    xtc_probability=0.5,
    xtc_threshold=0.2,
    dynatemp_range=0.3,
    dynatemp_exponent=1.5,
    mirostat=2,
    mirostat_tau=4.0,
    mirostat_eta=0.2,
    dry_multiplier=0.8,
    dry_base=2.0,
    dry_allowed_length=3,
    dry_penalty_last_n=32,
    dry_sequence_breakers=["\n"],
    adaptive_target=0.5,
    adaptive_decay=0.5,
    samplers=["top_k", "temperature"],
    post_sampling_probs=True,
    reasoning_budget=p.ReasoningBudget(tokens=64, start="<think>", ends=["</think>", "</reasoning>"], forced=[2, 3],
                                        open=True, control=True),
)
LOGPROB = p.TokenLogprob(token_id=42, logprob=-0.125, top=[(42, -0.125), (9, -2.5)], rank=1)
STATS = p.RequestStats(
    n_prompt_tokens=20,
    n_cached_tokens=8,
    n_evaluated_prompt_tokens=12,
    n_generated_tokens=5,
    queue_ms=1.5,
    prefill_ms=12.25,
    decode_ms=40.75,
    executor_id=1,
    slot_id=3,
    truncated=True,
    n_draft_tokens=30,
    n_draft_accepted=21,
)
EXECUTOR_INFO = p.ExecutorInfo(
    executor_id=1,
    model_path="/models/gemma-3-270m-Q4_K_M.gguf",
    model_desc="gemma3 270M Q4_K - Medium",
    n_params=268_098_176,
    model_size_bytes=253_231_104,
    n_vocab=262_144,
    n_ctx=32_768,
    n_ctx_train=32_768,
    n_swa=512,
    n_slots=8,
    n_batch=2048,
    kv_bytes=100_663_296,
    eog_token_ids=[1, 106],
    bos_token_id=2,
    device="cuda:0",
    pid=4242,
    n_embd=640,
    vocab_type=1,
    can_shift=True,
    pooling=1,
    arena="ggserve-run1-executor1-4242",
    lora_adapters=[p.LoraAdapterInfo(path="/models/style.gguf", task_name="style", prompt_prefix="Q: ")],
    n_ubatch=512,
    vision=True,
    audio=True,
    save_run_seconds=2.5e-5,
    save_bytes_per_token=18432.0,
)

# One instance of every message, every field (nested ones too) set to a non-default value.
REGION = p.ArrayRef(segment="ggserve-run1-executor1-4242", offset=128, nbytes=24, dtype="<f4", shape=(3, 2))
MEDIA = p.MediaChunk(start=3, n_tokens=2, sha256="ab" * 32, data=p.ArrayRef(
    segment="ggserve-run1-frontend-media-77", offset=64, nbytes=1000, dtype="|u1", shape=(1000,)), n_pos=1, part=1)
VECTORS = p.Vectors(dim=2, counts=[1, 3], data=bytes(range(8)), regions=[REGION], where=[(-1, 0), (0, 0)])

SAMPLES: list[p.Message] = [
    p.AddRequest(
        request_id="chatcmpl-1",
        prompt_token_ids=[2, 105, 2364, 107],
        max_tokens=64,
        sampling=SAMPLING,
        stop_token_ids=[106],
        min_tokens=3,
        cache_salt="tenant",
        ignore_eos=True,
        logprobs=2,
        cache_prompt=False,
        arrival_time=1_700_000_000.5,
        prompt_logprobs=1,
        return_progress=True,
        id_slot=3,
        n_keep=5,
        n_discard=12,
        n_cache_reuse=256,
        lora=[p.LoraScale(id=1, scale=-0.5)],
        speculative=p.Speculation(n_max=8, n_min=2, p_min=0.75),
        media=[MEDIA],
    ),
    p.AddRequests(requests=[p.AddRequest(request_id="cmpl-2-0", prompt_token_ids=[2, 9], max_tokens=4,
                                         sampling=SAMPLING, stop_token_ids=[1], min_tokens=1, cache_salt="s",
                                         ignore_eos=True, logprobs=0, cache_prompt=False, arrival_time=1.5,
                                         prompt_logprobs=0, return_progress=True, id_slot=1, n_keep=1, n_discard=1,
                                         n_cache_reuse=8, lora=[p.LoraScale(id=0, scale=1.5)],
                                         speculative=p.Speculation(n_max=4, n_min=1, p_min=0.5), media=[MEDIA])]),
    p.SetLoraScales(scales=[p.LoraScale(id=0, scale=0.25)]),
    p.Abort(request_ids=["chatcmpl-1", "chatcmpl-2"], reason=p.FinishReason.STOP),
    p.Hello(peer="frontend-0"),
    p.StatsRequest(token=7, reset_window=True),
    p.SlotAction(token=8, kind=p.SlotActionKind.RESTORE, id_slot=5, path="/var/slots/chat.bin", n_tokens=363),
    p.SlotActionDone(token=8, n_tokens=363, n_bytes=1_234_567, ms=12.5,
                     error=p.EngineError(code=p.ErrorCode.SLOT_BUSY, message="slot 5 is busy")),
    p.EndReasoning(token=9, request_id="4f1c"),
    p.EndReasoningDone(token=9, ended=2, error="no active completion for this id"),
    p.RequestOutputs(
        outputs=[
            p.RequestOutput(
                request_id="chatcmpl-1",
                token_ids=[42, 9],
                logprobs=[LOGPROB],
                finish_reason=p.FinishReason.LENGTH,
                error=p.EngineError(code=p.ErrorCode.EXECUTOR_FAILED, message="executor 1 died"),
                stats=STATS,
                prompt_logprobs=[LOGPROB],
                progress=p.PromptProgress(total=20, cache=8, processed=16, time_ms=12),
                vectors=VECTORS,
                n_cached_tokens=8,
            )
        ]
    ),
    p.EngineInfo(
        model_path="/models/gemma-3-270m-Q4_K_M.gguf",
        model_alias="gemma-3-270m",
        n_ctx=32_768,
        n_ctx_slot=4096,
        n_slots=8,
        n_executors=2,
        n_batch=2048,
        max_queue=256,
        epoch=123456789,
        executors=[EXECUTOR_INFO],
        context_shift=True,
        speculative="ngram-simple",
    ),
    p.EngineStatus(epoch=123456789, n_executors_ready=1, draining=True, n_requests=3),
    p.Heartbeat(),
    p.EngineStats(
        token=7,
        slots=[
            p.SlotState(
                slot_id=3,
                executor_id=1,
                busy=True,
                request_id="chatcmpl-1",
                n_cached_tokens=8,
                n_prompt_tokens=20,
                n_generated_tokens=5,
                n_prompt_tokens_cached=8,
                n_prompt_tokens_processed=12,
                max_tokens=64,
                sampling=SAMPLING,
                ignore_eos=True,
                logprobs=2,
            )
        ],
        n_waiting=4,
        n_running=8,
        requests_finished=100,
        requests_aborted=3,
        requests_failed=1,
        requests_rejected=2,
        executors=[p.ExecutorStats(
            executor_id=1, ready=True, n_slots=4, n_busy_slots=2, n_ctx=4096, kv_tokens=700, steps_total=900,
            step_seconds_total=45.5, prompt_tokens_total=3000, prompt_seconds_total=5.25,
            prompt_tokens_cached_total=2000, tokens_predicted_total=12_000, busy_slots_total=1800,
        )],
        tokens_predicted_seconds_total=80.5,
        n_tokens_max=1200,
        prompt_tokens_per_second=700.5,
        predicted_tokens_per_second=45.25,
        restarts=[p.ChildRestarts(process="executor-1", count=2)],
        started_at=1_700_000_000.5,
        preemptions_total=3,
        vectors_inline_total=2,
        steps_planned_ahead_total=5,
        lora_scales=[1.0, 0.0],
        spec_draft_tokens_total=300,
        spec_accepted_tokens_total=210,
        spec_drafts_total=40,
        spec_accepted_per_pos=[40, 35, 30],
    ),
    p.StepPlan(
        step_id=17,
        kv_ops=[p.KvOp(kind=p.KvOpKind.SAVE_FILE, seq_id=2, pos=363, src_seq_id=0, entry_id=12, n_discard=7,
                       path="/var/slots/chat.bin", tokens=[2, 105])],
        starts=[p.SeqStart(seq_id=2, sampling=SAMPLING, logprobs=0, history=[42, 9], prompt_logprobs=3,
                           penalty_context=[105, 2364], draft_p_min=0.5, media=[MEDIA])],
        ends=[5],
        items=[p.BatchItem(seq_id=2, token_ids=[2364, 107], pos=363, sample=True, logprob_targets=[107], draft=1,
                            draft_model=4, follows=True)],
        lora=[p.LoraScale(id=0, scale=1.5)],
        end_reasoning=[2],
    ),
    p.StepResult(
        step_id=17,
        executor_id=1,
        samples=[p.Sample(seq_id=2, token_id=42, logprob=LOGPROB, n_accepted=2, accepted_logprobs=[LOGPROB, LOGPROB],
                          drafted=[9, 9])],
        pos_min=[0, -1, 12],
        step_seconds=0.03125,
        error="llama_decode returned -3",
        prompt_logprobs=[p.PromptLogprobs(seq_id=2, logprobs=[LOGPROB])],
        failures=[p.SeqFailure(seq_id=3, error=p.EngineError(code=p.ErrorCode.INVALID_REQUEST, message="bad grammar"))],
        no_kv_room=True,
        slot_files=[p.SlotFileResult(seq_id=2, n_bytes=4096, ms=1.5, tokens=[2, 105],
                                     error=p.EngineError(code=p.ErrorCode.NOT_FOUND, message="no slot file"))],
        draft_seconds=0.0078125,
        save_seconds=0.00390625,
    ),
    p.EmbedRequest(request_id="embd-1", inputs=[[2, 105], [2, 9, 7]]),
    p.EmbedPlan(step_id=18, items=[p.EmbedItem(seq_id=1, token_ids=[2, 105])], releases=[REGION]),
    p.VectorsRead(request_ids=["embd-1"]),
    p.EmbedResult(
        step_id=18,
        executor_id=1,
        vectors=VECTORS,
        step_seconds=0.5,
        error="llama_decode returned -3",
        failures=[p.SeqFailure(seq_id=3, error=p.EngineError(code=p.ErrorCode.INTERNAL, message="invalid plan"))],
    ),
    p.ExecutorReady(info=EXECUTOR_INFO),
    p.ExecutorError(executor_id=1, message="failed to load model"),
    p.ExecutorDied(executor_id=1, pid=4242, message="exit code -9"),
    p.RestartExecutor(executor_id=1, pid=4242, message="step 9 ran longer than 300s"),
    p.Drain(timeout_s=30.0),
    p.Drained(n_cut_short=2),
    p.Shutdown(reason="SIGTERM"),
    p.Restarts(counts=[p.ChildRestarts(process="scheduler", count=1)]),
    p.ModelTable(models=[p.ModelEntry(
        name="alpha", path="/m/alpha.gguf", status=p.ModelStatus.SLEEPING, aliases=["first"], tags=["small"],
        config_path="/run/m0/config.json",
        load_id=2, failed=True, error="sleeping", n_slots=2, n_ctx=512, args=["--parallel", "2"],
        memory_bytes=263_000_000)]),
    p.LoadModel(name="alpha"),
    p.UnloadModel(name="beta"),
    p.ModelUsed(name="gamma"),
    p.StreamRead(conversation_id="conv::org/model:Q8_0", offset=120),
    p.StreamOpened(status=p.StreamReadStatus.OFFSET_LOST),
    p.StreamBytes(data=b"data: {}\n\n"),
    p.StreamLookup(conversation_ids=["conv", "other"]),
    p.StreamSessions(sessions=[p.StreamInfo("conv", True, 2958, 1795650311, 1795650312)]),
    p.StreamCancel(conversation_id="conv"),
    p.StreamCancelled(found=True),
]


def _assert_no_defaults(value: object, where: str) -> None:
    """Fail if any field of ``value`` (recursively) still holds its default: it would be omitted
    on the wire (omit_defaults) and the round trip would not exercise it."""
    if isinstance(value, msgspec.Struct):
        for field in msgspec.structs.fields(value):
            got = getattr(value, field.name)
            default = field.default
            if field.default_factory is not msgspec.NODEFAULT:
                default = field.default_factory()
            assert got != default, f"{where}.{field.name} holds its default {default!r}"
            assert got is not None and got != [] and got != "", f"{where}.{field.name} is empty"
            _assert_no_defaults(got, f"{where}.{field.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_no_defaults(item, f"{where}[{i}]")


def _assert_same(got: object, want: object, where: str = "msg") -> None:
    """Equal and of the same type all the way down (so an IntEnum decoded as int is caught)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, msgspec.Struct):
        for field in msgspec.structs.fields(want):
            name = field.name
            _assert_same(getattr(got, name), getattr(want, name), f"{where}.{name}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_samples_cover_every_message_type() -> None:
    assert {type(msg) for msg in SAMPLES} == set(typing.get_args(p.Message))
    assert len(SAMPLES) == len(typing.get_args(p.Message))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: p.Message) -> None:
    _assert_no_defaults(msg, type(msg).__name__)
    decoded = p.decode(p.encode(msg))
    assert decoded == msg
    _assert_same(decoded, msg)


def test_enums_travel_as_ints_and_print_openai_names() -> None:
    out = p.RequestOutput(request_id="r", finish_reason=p.FinishReason.LENGTH)
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(out))  # untyped: what is on the wire
    assert wire[0] == "r" and type(wire[3]) is int and wire[3] == 1
    assert str(p.FinishReason.LENGTH) == "length"
    assert all(issubclass(e, enum.IntEnum) for e in (p.FinishReason, p.ErrorCode, p.KvOpKind))


def _garbage() -> list[bytes]:
    valid = p.encode(SAMPLES[0])
    rng = random.Random(0)
    return [
        b"",
        b"\xc1",  # a byte msgpack never uses
        valid[: len(valid) // 2],  # truncated
        valid + b"\x00",  # trailing data
        msgspec.msgpack.encode(["NoSuchMessage", 1]),  # unknown tag
        msgspec.msgpack.encode(["Hello", 5]),  # wrong field type
        msgspec.msgpack.encode(["Hello"]),  # missing required field
        msgspec.msgpack.encode({"peer": "x"}),  # not array_like
        msgspec.msgpack.encode(["RequestOutputs", [["r", [], [], 9]]]),  # no such FinishReason
        # Random bytes, skipping those that hold invalid UTF-8 (see the test below).
        *(data for data in (rng.randbytes(rng.randrange(1, 64)) for _ in range(300))
          if not _raises_unicode_error(data)),
    ]


def _raises_unicode_error(data: bytes) -> bool:
    try:
        msgspec.msgpack.decode(data)
    except UnicodeDecodeError:
        return True
    except msgspec.DecodeError:
        pass
    return False


def test_garbage_raises_decode_error() -> None:
    cases = _garbage()
    assert len(cases) > 200
    for data in cases:
        with pytest.raises(msgspec.DecodeError):
            p.decode(data)


# msgspec 0.22 lets UnicodeDecodeError out of the decoder for a string that is not UTF-8
# (msgspec/msgspec#714, open), so a receive loop catching msgspec.DecodeError dies on such a
# frame. The fix belongs in ipc.protocol.decode (re-raise it as msgspec.DecodeError); strict, so
# this test fails once that is done and the marker must go.
@pytest.mark.parametrize(
    "data",
    [
        b"\x92\xa5Hello\xa2\xff\xfe",  # Hello(peer=<invalid UTF-8>)
        b"\x92\xa2\xff\xfe\x01",  # invalid UTF-8 tag
    ],
    ids=["field", "tag"],
)
def test_invalid_utf8_raises_decode_error(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        p.decode(data)


def _zmq_round_trip(endpoint: str, keys: transport.CurveKeys | None = None) -> None:
    ctx = zmq.Context()
    auth = transport.start_authenticator(ctx, keys) if keys else None
    router = dealer = None
    try:
        router = transport.bind_router(ctx, endpoint, keys)
        bound = router.getsockopt(zmq.LAST_ENDPOINT).decode()  # resolves tcp "*" ports
        identity = transport.executor_identity(3)
        dealer = transport.connect_dealer(ctx, bound, identity, keys)
        for msg in SAMPLES:
            transport.send(dealer, msg)
            assert router.poll(5000), f"router got nothing for {type(msg).__name__}"
            peer, got = transport.recv_routed(router)
            assert peer == identity
            _assert_same(got, msg)

            transport.send(router, msg, identity=peer)
            assert dealer.poll(5000), f"dealer got nothing for {type(msg).__name__}"
            _assert_same(transport.recv(dealer), msg)
    finally:
        for sock in (dealer, router):
            if sock is not None:
                sock.close()
        if auth is not None:
            auth.stop()
        ctx.term()


def test_zmq_round_trip_ipc() -> None:
    with tempfile.TemporaryDirectory(prefix="ggs-") as run_dir:  # short: ipc paths max ~107 bytes
        endpoint = transport.ipc_endpoint(run_dir, "scheduler")
        _zmq_round_trip(endpoint)


def test_zmq_round_trip_tcp_with_curve() -> None:
    _zmq_round_trip("tcp://127.0.0.1:*", transport.CurveKeys.generate())  # ZeroMQ picks a free port


def test_tcp_without_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="CURVE"):
        transport.bind_router(zmq.Context.instance(), "tcp://127.0.0.1:*")


@pytest.mark.parametrize("stranger", ["no keys", "other keys"])
def test_curve_router_hears_nothing_from_a_peer_without_the_run_client_key(stranger: str) -> None:
    keys = transport.CurveKeys.generate()
    ctx = zmq.Context()
    auth = transport.start_authenticator(ctx, keys)
    router = transport.bind_router(ctx, "tcp://127.0.0.1:*", keys)
    bound = router.getsockopt(zmq.LAST_ENDPOINT).decode()
    try:
        if stranger == "no keys":
            rogue = ctx.socket(zmq.DEALER)
            rogue.connect(bound)
        else:  # knows the server's public key, but brings its own client key pair
            other = transport.CurveKeys.generate()
            forged = transport.CurveKeys(keys.server_public, "", other.client_public, other.client_secret)
            rogue = transport.connect_dealer(ctx, bound, transport.LAUNCHER_IDENTITY, forged)
        transport.send(rogue, p.Shutdown(reason="pwned"))
        assert not router.poll(1000), "a peer without the run's client key got a message through"
        friend = transport.connect_dealer(ctx, bound, b"friend", keys)
        transport.send(friend, p.Hello(peer="friend"))
        assert router.poll(5000)
        assert transport.recv_routed(router) == (b"friend", p.Hello(peer="friend"))
        for sock in (rogue, friend):
            sock.close(linger=0)
    finally:
        router.close(linger=0)
        auth.stop()
        ctx.term()


@pytest.mark.parametrize("frames", [[b"\x00garbage"], [b"a", b"b"], [b""]])
def test_bad_frames_raise_bad_frame_not_a_crash(frames: list[bytes]) -> None:
    ctx = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="ggs-") as run_dir:
        router = transport.bind_router(ctx, transport.ipc_endpoint(run_dir, "s"))
        dealer = transport.connect_dealer(ctx, transport.ipc_endpoint(run_dir, "s"), b"peer")
        try:
            dealer.send_multipart(frames)
            assert router.poll(5000)
            with pytest.raises(transport.BadFrame):
                transport.recv_routed(router)
            router.send_multipart([b"peer", *frames])
            assert dealer.poll(5000)
            with pytest.raises(transport.BadFrame):
                transport.recv(dealer)
        finally:
            dealer.close(linger=0)
            router.close(linger=0)
            ctx.term()
