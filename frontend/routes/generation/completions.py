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
from typing import Any

import msgspec

from frontend.http import sse
from frontend.http.errors import invalid
from frontend.generation import ChoiceDelta, ChoiceResult, Generation, TokenText, collect, token_name
from frontend.http.asgi import Request, Response, StreamResponse, json_response
from frontend.text.prompts import Prompt, completion_prompts
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.api import prompt_logprobs
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
    truncated_prompts,
)
from frontend.api.schemas import (
    MAX_CHOICES,
    SYSTEM_FINGERPRINT,
    TEXT_COMPLETION_ID_PREFIX,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    PromptObject,
    StreamOptions,
)
from frontend.state import Frontend
from frontend.timings import progress_json
from frontend.structured.constraints import output_grammar
from frontend.structured.lazy import preserved_ids
from frontend.structured.reasoning import tagged_budget, with_tagged_budget
from ipc.protocol import TokenLogprob


def _logprobs(tokens: list[TokenText], offset: int, as_ids: bool) -> CompletionLogprobs:
    name = token_name(as_ids)
    return CompletionLogprobs(
        tokens=[name(t.text, t.token_id) for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{name(text, i): lp for (text, _, lp), i in zip(t.top, t.top_ids)} for t in tokens],
        text_offset=[offset + t.offset for t in tokens],
    )


def _echo_logprobs(fe: Frontend, prompt: Prompt, lps: list[TokenLogprob], top_n: int,
                   as_ids: bool) -> CompletionLogprobs:
    """The echoed prompt's tokens with ``top_n`` alternatives each: the first has no
    log-probability (nothing precedes it)."""
    name = token_name(as_ids)

    def text(token_id: int) -> str:
        return fe.tokenizer.piece(token_id).decode("utf-8", errors="replace")

    texts = [text(t) for t in prompt.token_ids]
    tops: list[dict[str, float] | None] = [None]
    tops += [{name(text(t), t): v for t, v in lp.top[:top_n]} for lp in lps]
    return CompletionLogprobs(
        tokens=[name(s, t) for s, t in zip(texts, prompt.token_ids)],
        token_logprobs=[None, *(lp.logprob for lp in lps)],
        top_logprobs=tops,
        text_offset=list(itertools.accumulate((len(t) for t in texts[:-1]), initial=0)),
    )


def _choice_logprobs(fe: Frontend, result: ChoiceResult, echoed: Prompt | None, echo_text: str, top_n: int,
                     as_ids: bool) -> CompletionLogprobs:
    generated = _logprobs(result.tokens, len(echo_text), as_ids)
    if echoed is None:
        return generated
    prompt = _echo_logprobs(fe, echoed, result.prompt_logprobs, top_n, as_ids)
    return CompletionLogprobs(
        tokens=prompt.tokens + generated.tokens,
        token_logprobs=prompt.token_logprobs + generated.token_logprobs,
        top_logprobs=prompt.top_logprobs + generated.top_logprobs,
        text_offset=prompt.text_offset + generated.text_offset,
    )


class _CompletionChunks:
    """Stream events of one completion request."""

    def __init__(self, id: str, created: int, model: str, body: CompletionRequest, prompts: list[Prompt],
                 echoes: list[str], gen: Generation, logprobs: bool, native: NativeResults | None) -> None:
        self._id, self._created, self._model = id, created, model
        self._body, self._prompts = body, prompts
        self._native = native
        self._echoes = echoes  # per choice: the prompt text to send first ("" without echo)
        self._gen = gen
        self._logprobs = logprobs
        self._include_usage, self._continuous_usage = (body.stream_options or StreamOptions()).usage_chunks()

    def _event(self, choices: list[CompletionChoice], **fields: Any) -> bytes:
        return sse.event(Completion(id=self._id, created=self._created, model=self._model,
                                    system_fingerprint=SYSTEM_FINGERPRINT, choices=choices,
                                    usage=self._gen.usage() if self._continuous_usage else None, **fields))

    def _chunk(self, choice: CompletionChoice) -> bytes:
        """A chunk of one choice, with that choice's timings on its last chunk (each with timings_per_token)."""
        timed = self._body.timings_per_token or choice.finish_reason is not None
        return self._event([choice], timings=self._gen.timings(choice.index) if timed else None)

    def head(self) -> list[bytes]:
        """Each choice's echoed prompt, and its token ids when asked for (vLLM's return_token_ids)."""
        body, n = self._body, self._body.n
        return [self._chunk(CompletionChoice(
                    i, text, None, None,
                    prompt_token_ids=self._prompts[i // n].token_ids if body.return_token_ids else msgspec.UNSET))
                for i, text in enumerate(self._echoes) if text or body.return_token_ids]

    def render(self, delta: ChoiceDelta) -> list[bytes]:
        body = self._body
        events = []
        if delta.progress is not None:
            events.append(self._event([], prompt_progress=progress_json(delta.progress)))
        token_ids = delta.token_ids if body.return_token_ids and delta.token_ids else msgspec.UNSET
        if delta.text or delta.tokens or token_ids:
            logprobs = (_logprobs(delta.tokens, len(self._echoes[delta.index]), bool(body.return_tokens_as_token_ids))
                        if self._logprobs else None)
            events.append(self._chunk(CompletionChoice(delta.index, delta.text, logprobs, None, token_ids=token_ids)))
        if delta.finish_reason is not None:
            events.append(self._chunk(CompletionChoice(delta.index, "", None, delta.finish_reason)))
        return events

    def tail(self) -> list[bytes]:
        bare = functools.partial(Completion, id=self._id, created=self._created, model=self._model,
                                 system_fingerprint=SYSTEM_FINGERPRINT, choices=[])
        return stream_tail(self._native, self._gen, self._include_usage, bare)


def _no_media(prompt: PromptObject, param: str) -> Prompt:
    """A server with a projector: media go to the other routes (as llama-server, a 400 here)."""
    raise invalid("/v1/completions takes text prompts: send images and audio to /completion or "
                  "/v1/chat/completions", param=f"{param}.multimodal_data")


def _prompts(fe: Frontend, body: CompletionRequest) -> list[Prompt]:
    if body.echo and body.logprobs is not None and body.stream:
        raise invalid("echo with logprobs is not supported with stream", param="stream")
    if body.echo and body.suffix is not None:
        raise invalid("echo and suffix cannot be combined", param="echo")
    prompts = completion_prompts(fe.tokenizer, body.prompt, body.suffix, _no_media if fe.multimodal else None,
                                 spm=fe.cfg.spm_infill, add_bos=body.add_special_tokens)
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
    prompts = truncated_prompts(prompts, body, limit, info, fe.tokenizer)
    for prompt in prompts:
        check_context(len(prompt.token_ids), info)
    check_slot(body, info)
    fe.fill_defaults(body)
    budget = tagged_budget(body, fe.tokenizer)
    logprobs = body.logprobs if body.logprobs is not None else (body.n_probs if body.n_probs > 0 else -1)
    echoed_logprobs = logprobs if body.echo else -1  # the echoed prompt's, and/or vLLM's prompt_logprobs
    engine_prompt_logprobs = max(echoed_logprobs, prompt_logprobs.requested(body))
    sampling = await fe.prepare(len(req.body), lambda: sampling_params(  # bad_words, logit_bias: tokenized
        body, fe.tokenizer, fe.sampling_defaults, fe.cfg.seed, fe.eog_ids, info.n_ctx_slot, grammar))
    requests = engine_requests(req.id, [p.token_ids for p in prompts], body.n, body,
                               with_tagged_budget(sampling, budget, [p.text for p in prompts]), limit, logprobs,
                               fe.cache_defaults, engine_prompt_logprobs, request_lora(body, info))
    gen = Generation(fe.engine, fe.tokenizer, requests, body.n, stop_strings(body.stop), logprobs >= 0,
                     sse.ping_interval(body.sse_ping_interval, fe.cfg.sse_ping_interval),
                     fe.written(preserved_ids(fe.tokenizer, body.preserved_tokens)), time_limit_s(body), body.n_indent,
                     trace=req.trace, prompt_log=fe.prompt_log, keep_stop=body.include_stop_str_in_output)
    native = NativeResults(fe, body, prompts, sampling, limit, logprobs) if body.verbose else None
    echoes = [p.text if body.echo else "" for p in prompts for _ in range(body.n)]
    completion_id, created = f"{TEXT_COMPLETION_ID_PREFIX}{req.id}", int(time.time())
    if body.stream:
        chunks = _CompletionChunks(completion_id, created, fe.model_id, body, prompts, echoes, gen, logprobs >= 0,
                                   native)
        return StreamResponse(sse.generation_events(gen, chunks.head, chunks.render, chunks.tail))
    results = await collect(gen)
    as_ids = bool(body.return_tokens_as_token_ids)
    return json_response(Completion(
        id=completion_id,
        created=created,
        model=fe.model_id,
        system_fingerprint=SYSTEM_FINGERPRINT,
        choices=[
            CompletionChoice(
                index=r.index,
                text=echoes[r.index] + r.text,
                logprobs=_choice_logprobs(fe, r, prompts[r.index // body.n] if body.echo else None, echoes[r.index],
                                          logprobs, as_ids)
                if logprobs >= 0 else None,
                finish_reason=r.finish_reason,
                prompt_token_ids=prompts[r.index // body.n].token_ids if body.return_token_ids else msgspec.UNSET,
                token_ids=r.token_ids if body.return_token_ids else msgspec.UNSET,
                prompt_logprobs=prompt_logprobs.as_vllm(fe.tokenizer, r.prompt_logprobs, body.prompt_logprobs, as_ids)
                if body.prompt_logprobs is not None else msgspec.UNSET,
            )
            for r in results
        ],
        usage=gen.usage(),
        timings=gen.timings(),
        verbose=native.first(gen, results) if native is not None else None,
    ))
