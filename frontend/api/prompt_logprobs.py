"""vLLM's ``prompt_logprobs``: each prompt token's log-probability and rank, with the most likely
alternatives, as the engine computed them during the prefill (``AddRequest.prompt_logprobs``:
such a prompt is evaluated whole, never taken from the prefix cache)."""

from __future__ import annotations

from frontend.api.schemas import PromptLogprobs, PromptTokenLogprob, SamplingFields
from frontend.generation import token_name
from frontend.http.errors import invalid
from frontend.text.tokenizer import Tokenizer
from ipc.protocol import TokenLogprob


def requested(body: SamplingFields) -> int:
    """The alternatives asked for per prompt token, -1 when none is; as vLLM, not with a stream."""
    if body.prompt_logprobs is None:
        return -1
    if body.stream:
        raise invalid("prompt_logprobs are not available with stream", param="prompt_logprobs")
    return body.prompt_logprobs


def as_vllm(tokenizer: Tokenizer, logprobs: list[TokenLogprob], top_n: int, as_ids: bool) -> PromptLogprobs:
    """vLLM's form of the engine's prompt log-probabilities (those of prompt tokens 1..): None for
    the first token, then by token id the prompt token and the ``top_n`` most likely ones;
    ``as_ids``: tokens named ``token_id:<id>`` (return_tokens_as_token_ids)."""
    name = token_name(as_ids)

    def entry(token_id: int, logprob: float, rank: int) -> PromptTokenLogprob:
        return PromptTokenLogprob(logprob, rank, name(tokenizer.piece(token_id, True).decode("utf-8", "replace"),
                                                      token_id))

    out: PromptLogprobs = [None]
    for lp in logprobs:
        ranked = {lp.token_id: entry(lp.token_id, lp.logprob, lp.rank)}
        for rank, (token_id, value) in enumerate(lp.top[:top_n], 1):
            ranked.setdefault(token_id, entry(token_id, value, rank))
        out.append(ranked)
    return out
