"""POST /v1/completions: prompt(s) -> tokens -> generation -> OpenAI text_completion JSON or SSE.

Choice ``p * n + i`` is choice i of prompt p. ``echo`` puts the prompt text before the completion
(streams send it in the first chunk of each choice). ``echo`` with ``logprobs`` also returns the
prompt tokens' log-probabilities (the first is null), computed by the engine; that combination is
not streamed (the prompt's log-probabilities only exist after its prefill).
"""

from __future__ import annotations

import functools
import itertools
import time

from frontend.http import sse
from frontend.http.errors import invalid
from frontend.generation import ChoiceDelta, ChoiceResult, Generation, TokenText, collect
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.text.prompts import Prompt, completion_prompts
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.api.lora import request_lora
from frontend.api.native_result import NativeResults, stream_tail
from frontend.api.sampling import (
    check_context,
    check_slot,
    engine_requests,
    sampling_params,
    stop_strings,
    time_limit_s,
    token_limit,
)
from frontend.api.schemas import (
    MAX_CHOICES,
    SYSTEM_FINGERPRINT,
    TEXT_COMPLETION_ID_PREFIX,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from frontend.state import Frontend
from frontend.timings import progress_json
from frontend.structured.constraints import output_grammar
from frontend.structured.lazy import preserved_ids
from frontend.structured.reasoning import tagged_budget, with_tagged_budget
from ipc.protocol import TokenLogprob


def _logprobs(tokens: list[TokenText], offset: int) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=[t.text for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{text: lp for text, _, lp in t.top} for t in tokens],
        text_offset=[offset + t.offset for t in tokens],
    )


def _echo_logprobs(fe: Frontend, prompt: Prompt, lps: list[TokenLogprob]) -> CompletionLogprobs:
    """The echoed prompt's tokens: the first has no log-probability (nothing precedes it)."""
    texts = [fe.tokenizer.piece(t).decode("utf-8", errors="replace") for t in prompt.token_ids]
    tops: list[dict[str, float] | None] = [None]
    tops += [{fe.tokenizer.piece(t).decode("utf-8", errors="replace"): v for t, v in lp.top} for lp in lps]
    return CompletionLogprobs(
        tokens=texts,
        token_logprobs=[None, *(lp.logprob for lp in lps)],
        top_logprobs=tops,
        text_offset=list(itertools.accumulate((len(t) for t in texts[:-1]), initial=0)),
    )


def _choice_logprobs(fe: Frontend, result: ChoiceResult, echoed: Prompt | None, echo_text: str) -> CompletionLogprobs:
    generated = _logprobs(result.tokens, len(echo_text))
    if echoed is None:
        return generated
    prompt = _echo_logprobs(fe, echoed, result.prompt_logprobs)
    return CompletionLogprobs(
        tokens=prompt.tokens + generated.tokens,
        token_logprobs=prompt.token_logprobs + generated.token_logprobs,
        top_logprobs=prompt.top_logprobs + generated.top_logprobs,
        text_offset=prompt.text_offset + generated.text_offset,
    )


class _CompletionChunks:
    """Stream events of one completion request."""

    def __init__(self, id: str, created: int, model: str, echoes: list[str], gen: Generation, logprobs: bool,
                 include_usage: bool, timings_per_token: bool, native: NativeResults | None) -> None:
        self._id, self._created, self._model = id, created, model
        self._native = native
        self._echoes = echoes  # per choice: the prompt text to send first ("" without echo)
        self._gen = gen
        self._logprobs = logprobs
        self._include_usage = include_usage
        self._timings_per_token = timings_per_token

    def _chunk(self, choice: CompletionChoice) -> bytes:
        timings = self._gen.timings() if self._timings_per_token or choice.finish_reason is not None else None
        return sse.event(Completion(id=self._id, created=self._created, model=self._model,
                                    system_fingerprint=SYSTEM_FINGERPRINT, choices=[choice], timings=timings))

    def head(self) -> list[bytes]:
        return [self._chunk(CompletionChoice(i, text, None, None)) for i, text in enumerate(self._echoes) if text]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        events = []
        if delta.progress is not None:
            events.append(sse.event(Completion(
                id=self._id, created=self._created, model=self._model, system_fingerprint=SYSTEM_FINGERPRINT,
                choices=[], prompt_progress=progress_json(delta.progress))))
        if delta.text or delta.tokens:
            logprobs = _logprobs(delta.tokens, len(self._echoes[delta.index])) if self._logprobs else None
            events.append(self._chunk(CompletionChoice(delta.index, delta.text, logprobs, None)))
        if delta.finish_reason is not None:
            events.append(self._chunk(CompletionChoice(delta.index, "", None, delta.finish_reason)))
        return events

    def tail(self) -> list[bytes]:
        bare = functools.partial(Completion, id=self._id, created=self._created, model=self._model,
                                 system_fingerprint=SYSTEM_FINGERPRINT, choices=[])
        return stream_tail(self._native, self._gen, self._include_usage, bare)


def _prompts(fe: Frontend, body: CompletionRequest) -> list[Prompt]:
    if body.echo and body.logprobs is not None and body.stream:
        raise invalid("echo with logprobs is not supported with stream", param="stream")
    if body.echo and body.suffix is not None:
        raise invalid("echo and suffix cannot be combined", param="echo")
    prompts = completion_prompts(fe.tokenizer, body.prompt, body.suffix, spm=fe.cfg.spm_infill,
                                 add_bos=body.add_special_tokens)
    if len(prompts) * body.n > MAX_CHOICES:
        raise invalid(f"{len(prompts)} prompts x n={body.n} is over the limit of {MAX_CHOICES} choices", param="n")
    return prompts


async def completions(fe: Frontend, req: Request) -> Response | StreamResponse:
    body = req.decode(CompletionRequest)
    refuse_unsupported(req.body, CompletionRequest)
    info = fe.engine_info()
    prompts = await fe.prepare(len(req.body), lambda: _prompts(fe, body))
    grammar = await fe.prepare(len(req.body), lambda: output_grammar(fe.grammars, body))
    limit = token_limit(body, fe.cfg)
    for prompt in prompts:
        check_context(len(prompt.token_ids), limit, info)
    check_slot(body, info)
    fe.fill_defaults(body)
    budget = tagged_budget(body, fe.tokenizer)
    logprobs = body.logprobs if body.logprobs is not None else (body.n_probs if body.n_probs > 0 else -1)
    prompt_logprobs = logprobs if body.echo else -1
    sampling = sampling_params(body, fe.tokenizer, fe.sampling_defaults, fe.cfg.seed, fe.eog_ids,
                               info.n_ctx_slot, grammar)
    requests = engine_requests(req.id, [p.token_ids for p in prompts], body.n, body,
                               with_tagged_budget(sampling, budget, [p.text for p in prompts]), limit, logprobs,
                               fe.cache_defaults, prompt_logprobs, request_lora(body, info))
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     sse.ping_interval(body.sse_ping_interval, fe.cfg.sse_ping_interval),
                     fe.written(preserved_ids(fe.tokenizer, body.preserved_tokens)), time_limit_s(body), body.n_indent,
                     trace=req.trace, prompt_log=fe.prompt_log, keep_stop=body.include_stop_str_in_output)
    native = NativeResults(fe, body, prompts, sampling, limit, logprobs) if body.verbose else None
    echoes = [p.text if body.echo else "" for p in prompts for _ in range(body.n)]
    completion_id, created = f"{TEXT_COMPLETION_ID_PREFIX}{req.id}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = _CompletionChunks(completion_id, created, fe.model_id, echoes, gen, logprobs >= 0, include_usage,
                                   body.timings_per_token, native)
        return StreamResponse(sse.generation_events(gen, chunks.head(), chunks.render, chunks.tail))
    results = await collect(gen)
    return json_response(Completion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[
            CompletionChoice(
                index=r.index,
                text=echoes[r.index] + r.text,
                logprobs=_choice_logprobs(fe, r, prompts[r.index // body.n] if body.echo else None, echoes[r.index])
                if logprobs >= 0 else None,
                finish_reason=r.finish_reason,
            )
            for r in results
        ],
        usage=gen.usage(),
        timings=gen.timings(),
        verbose=native.first(gen, results) if native is not None else None,
    ))
