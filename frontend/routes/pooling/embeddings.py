"""Embeddings: OpenAI's POST /v1/embeddings (also /embeddings) and llama-server's /embedding.

``input`` is a string, a list of strings, a token array or a list of token arrays, or any of
llama-server's other prompt forms (mixed text and token ids, ``{"prompt_string"}``, OpenAI's
``{"content": [text parts]}``: frontend.text.prompts); text is tokenized with the model's special
tokens (BOS/CLS, EOS/SEP) as llama-server does. Every input
runs whole (never truncated): one longer than the engine can take in one decode is a 400 naming
its index and length. Vectors are normalised as ``embd_normalize`` asks (llama-server's field,
on both routes as there; default the server's ``--embd-normalize``, L2); ``dimensions``
truncates OpenAI's (Matryoshka) on models trained for it, then normalises again. A body with
llama-server's ``content`` instead of ``input``, or the /embedding route, gets llama-server's
native answer: ``[{"index", "embedding": [[...]]}]``, one row per token with pooling none (not
normalised).
"""

from __future__ import annotations

import numpy as np

from frontend.api.embedding_schemas import (
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    NativeEmbedding,
)
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.api.schemas import PromptInput
from frontend.embedding import as_base64, embed, normalize
from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import ApiError, invalid
from frontend.state import Frontend
from frontend.text.prompts import split_prompts, subprompt_tokens, truncate_tokens
from ipc.protocol import EngineInfo

POOLING_NONE = 0
POOLING_RANK = 4
# --pooling none answers a vector per token: --embd-max-inputs long inputs would make gigabytes of JSON
MAX_TOKEN_VALUES = 2**24
# Model families trained with Matryoshka representation learning: their vectors may be cut to
# their first ``dimensions`` components (GGUF has no key saying so; matched on general.name).
_MATRYOSHKA_NAMES = ("nomic-embed-text-v1.5", "qwen3-embedding", "mxbai-embed-large", "embeddinggemma",
                     "snowflake-arctic-embed", "jina-embeddings-v3")


async def embeddings(fe: Frontend, req: Request) -> Response:
    body = req.decode(EmbeddingRequest)
    if body.input is None:
        if body.content is None:
            raise invalid('"input" must be provided', param="input")
        return await _native(fe, req, body, body.content)
    info = fe.engine_info()
    if info.executors[0].pooling == POOLING_NONE:
        raise invalid("pooling 'none' gives one vector per token, which OpenAI's API cannot carry: use "
                      "llama-server's /embedding or start the server with another --pooling")
    refuse_unsupported(req.body, EmbeddingRequest)
    width = _width(fe, info, body.dimensions)
    inputs = await fe.prepare(len(req.body), lambda: tokenize_inputs(
        fe, info, body.input, "input", body.truncate_prompt_tokens, body.add_special_tokens, body.truncation_side))
    rows, stats = await embed(fe.engine, req.id, inputs)
    vectors = normalize(np.concatenate(rows)[:, :width], _norm(fe, body))
    data = [EmbeddingData(i, as_base64(v) if body.encoding_format == "base64" else v.tolist())
            for i, v in enumerate(vectors)]
    usage = EmbeddingUsage(stats.n_prompt_tokens, stats.n_prompt_tokens)
    return json_response(EmbeddingList(data, fe.model_id, usage))


async def native_embedding(fe: Frontend, req: Request) -> Response:
    body = req.decode(EmbeddingRequest)
    value = body.content if body.content is not None else body.input
    if value is None:
        raise invalid('"input" or "content" must be provided', param="content")
    return await _native(fe, req, body, value)


async def _native(fe: Frontend, req: Request, body: EmbeddingRequest, value: PromptInput) -> Response:
    info = fe.engine_info()
    inputs = await fe.prepare(len(req.body), lambda: tokenize_inputs(fe, info, value, "content"))
    pooled = info.executors[0].pooling != POOLING_NONE
    n_values = sum(map(len, inputs)) * info.executors[0].n_embd
    if not pooled and n_values > MAX_TOKEN_VALUES:
        raise invalid(f"the answer would hold {n_values} values (a vector per token with --pooling none), more "
                      f"than {MAX_TOKEN_VALUES}: send fewer or shorter inputs", param="content")
    rows, _ = await embed(fe.engine, req.id, inputs)
    return json_response([NativeEmbedding(i, (normalize(r, _norm(fe, body)) if pooled else r).tolist())
                          for i, r in enumerate(rows)])


def _norm(fe: Frontend, body: EmbeddingRequest) -> int:
    if body.embd_normalize is not None:
        return body.embd_normalize
    if body.normalize is not None:  # vLLM's
        return 2 if body.normalize else -1
    return fe.cfg.embd_normalize


def tokenize_inputs(fe: Frontend, info: EngineInfo, value: PromptInput, param: str, truncate: int | None = None,
                    add_special: bool = True, truncation_side: str | None = None) -> list[list[int]]:
    """The inputs as token arrays (every form of frontend.text.prompts); a 400 for an empty,
    out-of-vocabulary or too long one, or too many of them (--embd-max-inputs). ``truncate``
    (vLLM's truncate_prompt_tokens) keeps each input's last tokens (-1: as many as fit; its first
    ones with ``truncation_side`` "right");
    ``add_special``: False leaves out the model's special tokens (BOS, EOS / CLS, SEP)."""
    items = split_prompts(value, param)
    if len(items) > fe.cfg.embd_max_inputs:
        raise invalid(f"{len(items)} inputs; at most {fe.cfg.embd_max_inputs} (--embd-max-inputs)", param=param)
    limit = input_token_limit(info)
    inputs = []
    for i, item in enumerate(items):
        tokens = subprompt_tokens(fe.tokenizer, item, f"{param}[{i}]", content_parts=True, add_bos=add_special)
        if truncate is not None:
            tokens = truncate_tokens(tokens, limit if truncate < 0 else truncate, truncation_side)
        if not tokens:  # an empty text on a model that adds no BOS, or an empty token array
            raise invalid(f"{param}[{i}] is empty", param=param)
        check_length(i, len(tokens), limit, param)
        inputs.append(tokens)
    return inputs


def input_token_limit(info: EngineInfo) -> int:
    """Tokens one input may have: it runs whole in one decode (--batch-size), within the KV pool
    (--ctx-size) and the positions the model was trained on."""
    return min(info.n_batch, info.n_ctx, *(e.n_ctx_train for e in info.executors))


def check_length(index: int, n_tokens: int, limit: int, param: str, what: str = "") -> None:
    """A 400 when input ``index`` of ``param`` is too long; ``what`` names it when it is more
    than that input (a rerank pair: the query and the document)."""
    if n_tokens > limit:
        what = what or f"{param}[{index}]"
        raise ApiError(400, f"{what} has {n_tokens} tokens, more than the {limit} one input may have "
                       "(it runs whole in one batch: see --batch-size and --ctx-size)",
                       type="exceed_context_size_error", param=param,
                       extra={"n_prompt_tokens": n_tokens, "n_ctx": limit})


def _width(fe: Frontend, info: EngineInfo, dimensions: int | None) -> int:
    """The components kept of each vector (``dimensions``, checked against the model)."""
    width = info.executors[0].n_embd
    if dimensions is None or dimensions == width:
        return width
    if dimensions > width:
        raise invalid(f"dimensions {dimensions} is more than the model's {width}", param="dimensions")
    name = " ".join(fe.tokenizer.metadata(key) or "" for key in ("general.name", "general.basename")).lower()
    if not any(family in name for family in _MATRYOSHKA_NAMES):
        raise invalid(f"this model's embeddings cannot be shortened (it was not trained for it, as Matryoshka "
                      f"models are): dimensions must be {width}", param="dimensions")
    return dimensions
