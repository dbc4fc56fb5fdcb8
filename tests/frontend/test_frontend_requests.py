"""Request bodies -> engine requests: validation errors, defaults, seeds, limits, prompts."""

from __future__ import annotations

import json
import msgspec
import pytest

from frontend.http.errors import ApiError, from_engine
from frontend.http.asgi import Request
from frontend.text.prompts import completion_prompts
from frontend.api.unsupported_fields import refuse_unsupported
from ggserve.samplers import sampler_order
from frontend.api.sampling import (
    DEFAULTS,
    CacheDefaults,
    check_context,
    check_server_defaults,
    engine_requests,
    max_tokens,
    sampling_params,
    server_defaults,
    stop_strings,
    token_limit,
)
from frontend.structured.grammar import GrammarChecker
from frontend.api.schemas import ChatCompletionRequest, CompletionRequest, NativeCompletionRequest, PromptObject
from ggserve.config import ServeConfig
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import EngineError, EngineInfo, ErrorCode


def params_of(req, tokenizer: Tokenizer, seed: int = -1, eog: list[int] | None = None):
    return sampling_params(req, tokenizer, DEFAULTS, seed, eog or [], 512)


def decode(body: bytes, type_: type) -> object:
    return Request("POST", "/x", {}, body, "id").decode(type_)


def error_of(body: bytes, type_: type) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode(body, type_)
    return info.value


def test_unknown_fields_are_ignored():
    req = decode(b'{"messages": [{"role": "user", "content": "hi", "x": 1}], "frobnicate": true, '
                 b'"response_format": {"type": "text"}}', ChatCompletionRequest)
    assert req.messages[0].content == "hi"


def test_content_parts_and_stop_forms():
    req = decode(b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}], "stop": "x"}',
                 ChatCompletionRequest)
    assert req.messages[0].content[0].text == "a"
    assert stop_strings(req.stop) == ["x"]
    assert stop_strings(["a", "b"]) == ["a", "b"]
    assert stop_strings(None) == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"messages": "hi"}', "messages"),
        (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        (b'{"messages": [{"role": "user", "content": [{"type": "hologram"}]}]}', "messages[0].content[0].type"),
        (b'{"messages": [], "temperature": "hot"}', "temperature"),
        (b'{"messages": [], "temperature": -1}', "temperature"),
        (b'{"messages": [], "n": 0}', "n"),
        (b'{"messages": [], "top_logprobs": 21}', "top_logprobs"),
        (b'{"messages": [], "stream": "yes"}', "stream"),
        (b'{"model": "m"}', "messages"),  # a missing field is the param, as OpenAI names it
        (b'{"messages": [{"content": "hi"}]}', "messages[0].role"),
    ],
)
def test_wrong_types_and_missing_fields_are_400_naming_the_field(body: bytes, param: str):
    err = error_of(body, ChatCompletionRequest)
    assert err.status == 400
    assert err.type == "invalid_request_error"
    assert err.param == param


@pytest.mark.parametrize("field", ["top_k", "repeat_last_n"])
def test_sampling_integers_beyond_a_c_int_are_400(field: str):
    for value in (2**31, -(2**31) - 1, 10**26):  # 10**26 could not even be sent to the engine
        err = error_of(b'{"prompt": "x", "%s": %d}' % (field.encode(), value), CompletionRequest)
        assert (err.status, err.param) == (400, field)
    assert getattr(decode(b'{"prompt": "x", "%s": %d}' % (field.encode(), 2**31 - 1), CompletionRequest),
                   field) == 2**31 - 1


def test_stop_strings_are_bounded():
    # each is searched for after every token, on the HTTP worker: 20,000 took ~25 ms a token
    many = json.dumps({"prompt": "x", "stop": [f"s{i}" for i in range(1025)]}).encode()
    assert (error_of(many, CompletionRequest).status, error_of(many, CompletionRequest).param) == (400, "stop")
    assert len(decode(json.dumps({"prompt": "x", "stop": ["s"] * 1024}).encode(), CompletionRequest).stop) == 1024


def test_invalid_json_and_missing_fields_are_400():
    assert error_of(b'{"messages": [', ChatCompletionRequest).status == 400
    assert error_of(b"", ChatCompletionRequest).status == 400
    assert error_of(b"[]", ChatCompletionRequest).status == 400
    err = error_of(b"{}", ChatCompletionRequest)
    assert err.status == 400 and "messages" in err.message


def test_error_body_shape():
    err = ApiError(400, "bad", param="x", extra={"n_ctx": 5})
    assert msgspec.json.decode(err.body()) == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": 400, "n_ctx": 5}
    }


@pytest.mark.parametrize(
    ("code", "status", "retry_after"),
    [
        (ErrorCode.INVALID_REQUEST, 400, False),
        (ErrorCode.OVERLOADED, 503, True),
        (ErrorCode.SHUTTING_DOWN, 503, True),
        (ErrorCode.EXECUTOR_FAILED, 503, True),  # the server heals: retrying succeeds
        (ErrorCode.NO_KV_ROOM, 503, True),
        (ErrorCode.INTERNAL, 500, False),
    ],
)
def test_engine_errors_map_to_statuses(code: ErrorCode, status: int, retry_after: bool):
    err = from_engine(EngineError(code, "why"))
    assert (err.status, err.message) == (status, "why")
    assert any(name == b"retry-after" for name, _ in err.headers) == retry_after


def test_llama_server_sampling_defaults(tokenizer: Tokenizer):
    params = params_of(decode(b'{"messages": []}', ChatCompletionRequest), tokenizer)
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.8, 40, 0.95, 0.05)
    assert (params.repeat_penalty, params.seed) == (1.0, None)
    assert params_of(decode(b'{"messages": []}', ChatCompletionRequest), tokenizer, 7).seed == 7


def test_given_parameters_win(tokenizer: Tokenizer):
    req = decode(b'{"messages": [], "temperature": 0, "top_k": 1, "top_p": 0.5, "min_p": 0, "seed": 3, '
                 b'"presence_penalty": 0.5, "frequency_penalty": 0.25, "repeat_penalty": 1.1}', ChatCompletionRequest)
    params = params_of(req, tokenizer)
    assert (params.temperature, params.top_k, params.top_p, params.min_p, params.seed) == (0.0, 1, 0.5, 0.0, 3)
    assert (params.presence_penalty, params.frequency_penalty, params.repeat_penalty) == (0.5, 0.25, 1.1)


def test_logit_bias_ids_and_text(tokenizer: Tokenizer):
    req = decode(b'{"messages": [], "logit_bias": {"9259": -100, " world": 5}}', ChatCompletionRequest)
    bias = params_of(req, tokenizer).logit_bias
    world = tokenizer.tokenize(" world", add_special=False, parse_special=False)
    assert bias == [(9259, -100.0), *((t, 5.0) for t in world)]
    req = decode(b'{"messages": [], "logit_bias": {"999999999": 1}}', ChatCompletionRequest)
    with pytest.raises(ApiError) as info:
        params_of(req, tokenizer)
    assert info.value.param == "logit_bias"


def test_n_choices_get_consecutive_seeds_and_ids(tokenizer: Tokenizer):
    req = decode(b'{"prompt": "x", "n": 3, "seed": 10}', CompletionRequest)
    requests = engine_requests("rid", [[1, 2], [3]], 3, req, params_of(req, tokenizer), 8, -1, CacheDefaults())
    assert [r.request_id for r in requests] == [f"rid-{i}" for i in range(6)]
    assert [r.sampling.seed for r in requests] == [10, 11, 12, 10, 11, 12]
    assert [r.prompt_token_ids for r in requests] == [[1, 2]] * 3 + [[3]] * 3
    unseeded = decode(b'{"prompt": "x", "n": 2}', CompletionRequest)
    assert {r.sampling.seed for r in engine_requests("r", [[1]], 2, unseeded,
                                                     params_of(unseeded, tokenizer), 8, -1, CacheDefaults())} == {None}


def test_n_keep_counts_bos_and_minus_one_keeps_the_prompt_and_cache_fields_default_to_the_server():
    def keeps(body: bytes, cache: CacheDefaults = CacheDefaults()) -> list[tuple[int, int, int]]:
        req = decode(body, CompletionRequest)
        return [(r.n_keep, r.n_discard, r.n_cache_reuse)
                for r in engine_requests("r", [[1, 2, 3], [4]], 1, req, DEFAULTS, 8, -1, cache)]

    assert keeps(b'{"prompt": "x"}') == [(1, 0, 0)] * 2  # the server's --keep 0, and BOS
    assert keeps(b'{"prompt": "x"}', CacheDefaults(5, 64, add_bos=False)) == [(5, 0, 64)] * 2
    assert keeps(b'{"prompt": "x", "n_keep": -1, "n_discard": 7}') == [(4, 7, 0), (2, 7, 0)]
    assert keeps(b'{"prompt": "x", "n_keep": 2, "n_cache_reuse": 0}', CacheDefaults(-1, 64)) == [(3, 0, 0)] * 2


def test_max_tokens():
    assert max_tokens(None) == -1
    assert max_tokens(-1) == -1
    assert max_tokens(5) == 5
    assert max_tokens(0) == 0  # the prompt into the cache, nothing generated (llama-server's n_predict 0)
    with pytest.raises(ApiError) as info:
        max_tokens(-2, "max_completion_tokens")
    assert (info.value.status, info.value.param) == (400, "max_completion_tokens")


def _info(n_ctx_slot: int, context_shift: bool = False) -> EngineInfo:
    return EngineInfo(model_path="m", model_alias="m", n_ctx=n_ctx_slot, n_ctx_slot=n_ctx_slot, n_slots=1,
                      n_executors=1, n_batch=8, max_queue=1, epoch=0, context_shift=context_shift)


def test_context_check_refuses_only_a_prompt_that_leaves_no_room():
    check_context(10, _info(32))
    check_context(31, _info(32))  # room for one token; a larger max_tokens stops at the context
    with pytest.raises(ApiError) as info:
        check_context(32, _info(32, context_shift=True))  # a prompt that fills it does not run
    err = info.value
    assert (err.status, err.type) == (400, "exceed_context_size_error")
    assert err.extra == {"n_prompt_tokens": 32, "n_ctx": 32} and "32 tokens" in err.message
    with pytest.raises(ApiError):
        check_context(0, _info(32))


def test_prompt_forms(tokenizer: Tokenizer):
    hello = tokenizer.tokenize("Hello", add_special=True, parse_special=True)
    assert [p.token_ids for p in completion_prompts(tokenizer, "Hello", None)] == [hello]
    assert [(p.token_ids, p.text) for p in completion_prompts(tokenizer, [9259, 1902], None)] == [
        ([9259, 1902], tokenizer.detokenize([9259, 1902], special=False))
    ]
    many = completion_prompts(tokenizer, ["Hello", [9259]], None)
    assert [p.token_ids for p in many] == [hello, [9259]]
    assert [p.text for p in many] == ["Hello", "Hello"]
    # llama-server's other forms: text and ids mixed in one prompt, object prompts
    mixed = completion_prompts(tokenizer, [*hello, " world"], None)
    assert [p.token_ids for p in mixed] == [hello + tokenizer.tokenize(" world", add_special=False, parse_special=True)]
    objects = completion_prompts(tokenizer, [PromptObject(prompt_string="Hello"), PromptObject(prompt_string=hello)],
                                 None)
    assert [p.token_ids for p in objects] == [hello, hello]


@pytest.mark.parametrize(
    ("prompt", "suffix", "param"),
    [
        ([], None, "prompt"),
        ([1, [2]], None, "prompt"),  # a prompt holding ids holds ids and text only
        (PromptObject(prompt_string="x", multimodal_data=["AA=="]), None, "prompt.multimodal_data"),
        (PromptObject(content=[{"type": "text", "text": "x"}]), None, "prompt"),  # content parts: embeddings only
        ([[1, 10**9]], None, "prompt"),
        ("def f():", "return 1", "suffix"),  # Gemma 3 has no FIM tokens
    ],
)
def test_bad_prompts(tokenizer: Tokenizer, prompt: object, suffix: str | None, param: str):
    with pytest.raises(ApiError) as info:
        completion_prompts(tokenizer, prompt, suffix)
    assert (info.value.status, info.value.param) == (400, param)


class _CodeModelVocab:
    """Stands in for the vocabulary of a code model with fill-in-the-middle tokens."""

    n_vocab, bos_id, add_bos, supports_infill = 1000, 1, True, True
    fim_prefix_id, fim_suffix_id, fim_middle_id = 900, 901, 902
    fim_repo_id = fim_sep_id = -1

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        return [self.bos_id] * add_special + [ord(c) for c in text]

    def invalid_token(self, token_ids: list[int]) -> int | None:
        return next((t for t in token_ids if not 0 <= t < self.n_vocab), None)

    def detokenize(self, token_ids: list[int], special: bool = True) -> str:
        return "".join(map(chr, token_ids))


def test_suffix_builds_an_infill_prompt():
    vocab = _CodeModelVocab()
    [prompt] = completion_prompts(vocab, "ab", "c")  # type: ignore[arg-type]
    assert prompt.token_ids == [1, 900, ord("a"), ord("b"), 901, ord("c"), 902]
    [from_tokens] = completion_prompts(vocab, [97, 98], "c")  # type: ignore[arg-type]
    assert from_tokens.token_ids == prompt.token_ids
    # --spm-infill: suffix first, as llama-server orders it
    [spm] = completion_prompts(vocab, "ab", "c", spm=True)  # type: ignore[arg-type]
    assert spm.token_ids == [1, 901, ord("c"), 900, ord("a"), ord("b"), 902]


def test_infill_route_orders_prefix_and_suffix_as_spm_infill_says():
    from frontend.routes.generation.native import _infill_prompt

    body = decode(b'{"input_prefix": "a", "prompt": "b", "input_suffix": "c"}', NativeCompletionRequest)
    [psm] = _infill_prompt(_CodeModelVocab(), body, spm=False)  # type: ignore[arg-type]
    [spm] = _infill_prompt(_CodeModelVocab(), body, spm=True)  # type: ignore[arg-type]
    assert psm.token_ids == [1, 900, ord("a"), ord("b"), 901, ord("c"), 902]
    assert spm.token_ids == [1, 901, ord("c"), 900, ord("a"), ord("b"), 902]


def test_llama_server_logit_bias_forms(tokenizer: Tokenizer):
    req = decode(b'{"prompt": "x", "logit_bias": [[9259, false], [" world", -2], ["15", 1]]}', CompletionRequest)
    bias = params_of(req, tokenizer).logit_bias
    world = tokenizer.tokenize(" world", add_special=False, parse_special=False)
    assert bias == [(9259, float("-inf")), *((t, -2.0) for t in world), (15, 1.0)]
    req = decode(b'{"prompt": "x", "logit_bias": {"9259": false}}', CompletionRequest)
    assert params_of(req, tokenizer).logit_bias == [(9259, float("-inf"))]
    with pytest.raises(ApiError) as info:
        params_of(decode(b'{"prompt": "x", "logit_bias": {"1": true}}', CompletionRequest), tokenizer)
    assert info.value.param == "logit_bias"


def test_ignore_eos_bans_the_end_of_generation_tokens(tokenizer: Tokenizer):
    req = decode(b'{"prompt": "x", "ignore_eos": true}', CompletionRequest)
    assert params_of(req, tokenizer, eog=[1, 106]).logit_bias == [(1, float("-inf")), (106, float("-inf"))]


def test_server_logit_bias_and_grammar_apply_to_requests_that_set_none(tokenizer: Tokenizer):
    cfg = ServeConfig(model="", logit_bias=["5+1.5", "7-inf"], grammar='root ::= [0-9]+')
    defaults = server_defaults(cfg)
    check_server_defaults(defaults, tokenizer, GrammarChecker(tokenizer))

    def params(body: bytes, grammar: str | None = None):
        return sampling_params(decode(body, CompletionRequest), tokenizer, defaults, -1, [1], 512, grammar)

    plain = params(b'{"prompt": "x"}')
    assert plain.logit_bias == [(5, 1.5), (7, float("-inf"))] and plain.grammar == 'root ::= [0-9]+'
    # a request's own logit bias replaces the server's, even an empty one (as llama-server)
    assert params(b'{"prompt": "x", "logit_bias": {"9": 2}}').logit_bias == [(9, 2.0)]
    assert params(b'{"prompt": "x", "logit_bias": {}}').logit_bias == []
    assert params(b'{"prompt": "x", "ignore_eos": true}').logit_bias == [(5, 1.5), (7, float("-inf")),
                                                                       (1, float("-inf"))]
    # a request's own output format (its checked grammar) replaces the server's
    assert params(b'{"prompt": "x"}', 'root ::= "a"').grammar == 'root ::= "a"'


def test_server_json_schema_becomes_the_default_grammar() -> None:
    grammar = server_defaults(ServeConfig(model="", json_schema='{"type": "object"}')).grammar
    assert grammar is not None and grammar.startswith("root ::= ")
    assert server_defaults(ServeConfig(model="")).grammar is None


@pytest.mark.parametrize(("cfg", "message"), [
    (ServeConfig(model="", logit_bias=["999999999+1"]), "--logit-bias: token 999999999 is not in the model's vocabulary"),
    (ServeConfig(model="", grammar="root ::= undefined-rule"), "the server's grammar"),
])
def test_server_defaults_the_model_cannot_take_stop_the_start(tokenizer: Tokenizer, cfg: ServeConfig,
                                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_server_defaults(server_defaults(cfg), tokenizer, GrammarChecker(tokenizer))


def test_penalty_windows_past_the_context_are_the_context(tokenizer: Tokenizer):
    # llama.cpp allocates the window: 2**31 - 1 took the executor to 22 GB and the OOM killer
    req = decode(b'{"prompt": "x", "repeat_last_n": 2147483647, "dry_penalty_last_n": 100000000, '
                 b'"dry_multiplier": 0.8}', NativeCompletionRequest)
    params = params_of(req, tokenizer)
    assert (params.repeat_last_n, params.dry_penalty_last_n) == (512, 512)  # the slot's context
    small = params_of(decode(b'{"prompt": "x", "repeat_last_n": 40}', NativeCompletionRequest), tokenizer)
    assert small.repeat_last_n == 40


def test_llama_server_names_and_samplers(tokenizer: Tokenizer):
    req = decode(b'{"prompt": "x", "n_predict": 7, "max_tokens": 3, "n_cmpl": 2, "n": 5, "mirostat": 2, '
                 b'"samplers": "kt", "dry_multiplier": 0.5, "dry_base": 0.5, "repeat_last_n": -1}', NativeCompletionRequest)
    assert token_limit(req, ServeConfig(model="m")) == 7 and req.n == 2
    params = params_of(req, tokenizer)
    assert params.samplers == ["top_k", "temperature"] and params.mirostat == 2 and params.dry_multiplier == 0.5
    assert params.dry_base == DEFAULTS.dry_base  # below 1: the default, as llama-server
    assert params.repeat_last_n == 512  # -1: the slot's context
    assert token_limit(decode(b'{"prompt": "x"}', CompletionRequest), ServeConfig(model="m", n_predict=9)) == 9
    assert sampler_order(["Top-K", "nucleus", "temp", "minp"]) == ["top_k", "top_p", "temperature", "min_p"]
    for bad in (["top_q"], "kz"):
        with pytest.raises(ValueError):
            sampler_order(bad)
        with pytest.raises(ApiError) as info:
            params_of(decode(msgspec.json.encode({"prompt": "x", "samplers": bad}), NativeCompletionRequest), tokenizer)
        assert info.value.param == "samplers"


def test_unsupported_llama_server_fields_are_refused_unless_neutral():
    refuse_unsupported(b'{"prompt": "x", "backend_sampling": false, "verbose": false, "n_indent": null}',
                       NativeCompletionRequest)
    for body, field in [(b'{"chat_parser": "x"}', "chat_parser"),
                        (b'{"chat_format": 1}', "chat_format"), (b'{"messages": [], "echo": true}', "echo")]:
        with pytest.raises(ApiError) as info:
            refuse_unsupported(body, ChatCompletionRequest)
        assert (info.value.status, info.value.param) == (400, field)
    refuse_unsupported(b'{"prompt": "x", "echo": true}', CompletionRequest)  # a field of /v1/completions


def test_indent_guard_ends_the_text_at_the_first_short_line():
    from frontend.text.stop import IndentGuard

    guard = IndentGuard(4)
    assert guard.push("if x:\n    ") == ("if x:\n", False)  # the indentation waits for the line's text
    assert guard.push("y = 1\n  z") == ("    y = 1\n  ", True)  # two spaces: the text ends before "z"
    assert IndentGuard(2).push("a\n\nb") == ("a\n", True)  # an empty line is not indented either
    assert IndentGuard(0).push("a\nb") == ("a\nb", False)
