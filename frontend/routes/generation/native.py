"""llama-server's native completion API: POST /completion (also /completions) and POST /infill.

Request and response follow llama-server (the result object: frontend.api.native_result).
One prompt gives one object, several prompts (or ``n_cmpl``) a list.
A prompt may mix text and token ids (``[12, "text", 34]``), as in llama-server.
Streams send one event per piece of text (``stop: false``) and, per result, a final event with
every field (``stop: true``), as llama-server does (no ``[DONE]``).

/infill builds llama-server's repo-level fill-in-the-middle prompt from ``input_extra`` (files),
``input_prefix``, ``prompt`` and ``input_suffix`` with the model's FIM tokens; a model without
them answers 501, as llama-server does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

from frontend.http import sse
from frontend.http.errors import ApiError, invalid
from frontend.generation import Choice, ChoiceDelta, Generation, collect
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.api.lora import request_lora
from frontend.api.native_result import NativeResults, probabilities
from frontend.text.multimodal import check_chunks
from frontend.text.prompts import Prompt, check_tokens, completion_prompts, fim_tokens
from frontend.api.sampling import (
    check_context,
    check_slot,
    engine_requests,
    sampling_params,
    stop_strings,
    time_limit_s,
    token_limit,
    truncated_prompts,
    with_post_sampling_probs,
)
from frontend.media import files as media
from frontend.api.schemas import MAX_CHOICES, NativeCompletionRequest, PromptObject
from frontend.state import Frontend
from frontend.structured.constraints import output_grammar
from frontend.structured.lazy import preserved_ids
from frontend.structured.reasoning import tagged_budget, with_tagged_budget
from frontend.timings import progress_json, progress_timings
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import SamplingParams


class _Call(NativeResults):
    """What the responses of one native call share: the final results, and the partial ones a
    stream sends before them."""

    def __init__(self, fe: Frontend, body: NativeCompletionRequest, prompts: list[Prompt], gen: Generation,
                 sampling: SamplingParams, limit: int, logprobs: int) -> None:
        super().__init__(fe, body, prompts, sampling, limit, logprobs, return_tokens=body.return_tokens,
                         post_sampling_probs=body.post_sampling_probs, response_fields=body.response_fields)
        self.gen = gen

    def partial(self, choice: Choice, delta: ChoiceDelta) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": delta.index,
            "content": delta.text,
            "tokens": delta.token_ids,  # a stream's pieces carry their ids always, as llama-server's
            "stop": False,
            "id_slot": self.id_slot(choice),
            "tokens_predicted": choice.n_tokens,
            "tokens_evaluated": len(self.prompt_of(choice).token_ids),
        }
        if self.body.timings_per_token:
            out["timings"] = progress_timings(delta.progress) if delta.progress is not None else self.gen.timings()
        if delta.progress is not None:
            out["prompt_progress"] = progress_json(delta.progress)
        if self.logprobs > 0 and delta.tokens:
            out["completion_probabilities"] = probabilities(delta.tokens, self.post_sampling_probs)
        return out


def _native_prompts(fe: Frontend, body: NativeCompletionRequest) -> list[Prompt]:
    if body.input_prefix is not None or body.input_suffix is not None or body.input_extra is not None:
        raise invalid("input_prefix, input_suffix and input_extra belong to /infill", param="input_prefix")
    if body.prompt is None:
        raise invalid('"prompt" must be provided', param="prompt")
    multimodal = (lambda prompt, param: _multimodal_prompt(fe, prompt, param)) if fe.multimodal is not None else None
    prompts = completion_prompts(fe.tokenizer, body.prompt, None, multimodal)
    if len(prompts) * body.n > MAX_CHOICES:
        raise invalid(f"{len(prompts)} prompts x n={body.n} is over the limit of {MAX_CHOICES} choices", param="n")
    return prompts


def _multimodal_prompt(fe: Frontend, prompt: PromptObject, param: str) -> Prompt:
    """llama-server's ``{"prompt_string", "multimodal_data"}``: one marker per file in the text."""
    if not isinstance(prompt.prompt_string, str):
        raise invalid("with multimodal_data, prompt_string must be a string (one marker per file)",
                      param=f"{param}.prompt_string")
    data = [prompt.multimodal_data] if isinstance(prompt.multimodal_data, str) else prompt.multimodal_data or []
    files = [media.load_base64(item, f"{param}.multimodal_data[{i}]", fe.media_limits) for i, item in enumerate(data)]
    assert fe.multimodal is not None
    tokenized = fe.multimodal.tokenize(prompt.prompt_string, files, param, add_special=True)
    return Prompt(tokenized.tokens, prompt.prompt_string, tokenized.spans)


def _infill_prompt(tokenizer: Tokenizer, body: NativeCompletionRequest, spm: bool) -> list[Prompt]:
    """llama-server's repo-level FIM layout (https://arxiv.org/pdf/2409.12186):
    ``[BOS] [FIM_REP]myproject\\n ([FIM_SEP]file\\n text)* [FIM_SEP]filename\\n
    [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]`` (with ``spm`` suffix first: fim_tokens)."""
    missing = [name for name, token in (("prefix", tokenizer.fim_prefix_id), ("suffix", tokenizer.fim_suffix_id),
                                        ("middle", tokenizer.fim_middle_id)) if token < 0]
    if missing:
        raise ApiError(501, f"infill is not supported by this model: it has no fill-in-the-middle "
                            f"{', '.join(missing)} token(s)")
    if body.input_prefix is None or body.input_suffix is None:
        raise invalid("/infill needs input_prefix and input_suffix", param="input_prefix")
    prompt = "" if body.prompt is None else body.prompt
    if not isinstance(prompt, str):
        raise invalid("prompt of /infill must be a string", param="prompt")

    def text(s: str) -> list[int]:
        return tokenizer.tokenize(s, add_special=False, parse_special=False)

    tokens = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []
    if tokenizer.fim_repo_id >= 0:
        tokens += [tokenizer.fim_repo_id, *text("myproject\n")]
    for chunk in body.input_extra or ():
        if tokenizer.fim_sep_id >= 0:
            tokens += [tokenizer.fim_sep_id, *text(chunk.filename + "\n")]
        else:
            tokens += text("\n\n--- snippet ---\n\n")
        tokens += text(chunk.text)
    if tokenizer.fim_sep_id >= 0:
        tokens += [tokenizer.fim_sep_id, *text("filename\n")]
    tokens += fim_tokens(tokenizer, [*text(body.input_prefix), *text(prompt)], text(body.input_suffix), spm)
    check_tokens(tokenizer, tokens, "prompt")
    return [Prompt(tokens, prompt)]


async def completion(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(NativeCompletionRequest)
    # Media in a prompt are decoded as it is tokenized (mtmd, ffmpeg for a video): off the event
    # loop, however small the body.
    size = len(req.body) if fe.multimodal is None else None
    return await _run(fe, req, body, await fe.prepare(size, lambda: _native_prompts(fe, body)))


async def infill(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(NativeCompletionRequest)
    prompts = await fe.prepare(len(req.body), lambda: _infill_prompt(fe.tokenizer, body, fe.cfg.spm_infill))
    return await _run(fe, req, body, prompts)


async def _run(fe: Frontend, req: Request, body: NativeCompletionRequest,
               prompts: list[Prompt]) -> Response | StreamResponse:
    refuse_unsupported(req.body, NativeCompletionRequest)
    info = fe.engine_info()
    grammar = await fe.prepare(len(req.body), lambda: output_grammar(fe.grammars, body))
    limit = token_limit(body, fe.cfg)
    prompts = truncated_prompts(prompts, body, limit, info, fe.tokenizer)
    for prompt in prompts:
        check_chunks(prompt.media, info.n_ctx_slot)
        check_context(len(prompt.token_ids), info)
    check_slot(body, info)
    fe.fill_defaults(body)
    budget = tagged_budget(body, fe.tokenizer)
    n_probs = body.n_probs or body.logprobs or 0
    logprobs = n_probs if n_probs > 0 else -1
    sampling = with_post_sampling_probs(await fe.prepare(len(req.body), lambda: sampling_params(
        body, fe.tokenizer, fe.sampling_defaults, fe.cfg.seed, fe.eog_ids, info.n_ctx_slot, grammar)),
        body.post_sampling_probs)
    lora = request_lora(body, info)
    has_media = any(p.media for p in prompts)
    media_chunks = fe.media_arena.put([p.media for p in prompts]) if has_media else None  # last: nothing raises after
    requests = engine_requests(req.id, [p.token_ids for p in prompts], body.n, body,
                               with_tagged_budget(sampling, budget, [p.text for p in prompts]), limit, logprobs,
                               fe.cache_defaults, lora=lora, media=media_chunks)
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     sse.ping_interval(body.sse_ping_interval, fe.cfg.sse_ping_interval),
                     fe.written(preserved_ids(fe.tokenizer, body.preserved_tokens)), time_limit_s(body), body.n_indent,
                     trace=req.trace,
                     on_exit=(lambda: fe.media_arena.release(media_chunks)) if media_chunks else None,
                     prompt_log=fe.prompt_log, keep_stop=body.include_stop_str_in_output)
    call = _Call(fe, body, prompts, gen, sampling, limit, logprobs)
    if body.stream:
        return StreamResponse(_events(call))
    results = await collect(gen)
    bodies = [call.result(gen.choices[r.index], r.text, r.tokens, r.token_ids) for r in results]
    return json_response(bodies[0] if len(bodies) == 1 else bodies)


async def _events(call: _Call) -> AsyncGenerator[bytes, None]:
    """The stream: partial results while generating, then each result's final event."""
    gen = call.gen

    def render(delta: ChoiceDelta) -> list[bytes]:
        choice = gen.choices[delta.index]
        events = []
        if delta.progress is not None:  # its own event, before the text of the same step
            events.append(sse.event(call.partial(choice, ChoiceDelta(delta.index, progress=delta.progress))))
        if delta.text or delta.token_ids or delta.tokens:  # (a bare finish: the final event carries it)
            events.append(sse.event(call.partial(choice, dataclasses.replace(delta, progress=None))))
        return events

    def tail() -> list[bytes]:
        return [sse.event(call.result(c, "", [], [])) for c in gen.choices]

    async for chunk in sse.generation_events(gen, list, render, tail, done=False):
        yield chunk
