"""vLLM's scoring: POST /score and /v1/score, on an embedding or a reranking server.

Each pair of texts gets one score. The left texts are ``text_1`` (vLLM's other names: ``data_1``,
``queries``), the right ones ``text_2`` (``data_2``, ``documents``, ``items``); each side is a
text or a list of them. One text on the left pairs with every text on the right; two lists of
the same length pair item by item (vLLM's 1:N and N:N). A reranking server (a cross-encoder)
scores a pair with its classification head, as /v1/rerank does, through the sigmoid as vLLM
does (``use_activation`` false: the raw score that /v1/rerank gives); an embedding server (a
bi-encoder) gives the cosine similarity of the two texts' vectors. All of a call's inputs go to
the engine as one request.
"""

from __future__ import annotations

import time

import numpy as np

from frontend.api.embedding_schemas import EmbeddingUsage, ScoreData, ScoreRequest, ScoreResponse, ScoreTexts
from frontend.api.unsupported_fields import refuse_unsupported
from frontend.embedding import embed, normalize
from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import invalid
from frontend.routes.pooling.embeddings import (
    POOLING_NONE, POOLING_RANK, check_length, input_token_limit, tokenize_inputs,
)
from frontend.routes.pooling.rerank import RERANK_TEMPLATE_KEY, first_tokens, pair_tokens
from frontend.state import Frontend

_LEFT = ("text_1", "data_1", "queries")
_RIGHT = ("text_2", "data_2", "documents", "items")


async def score(fe: Frontend, req: Request) -> Response:
    body = req.decode(ScoreRequest)
    refuse_unsupported(req.body, ScoreRequest)
    left, left_name = _side(body, _LEFT)
    right, right_name = _side(body, _RIGHT)
    if len(left) != 1 and len(left) != len(right):
        raise invalid(f"{left_name} has {len(left)} texts and {right_name} {len(right)}: give one {left_name} "
                      f"(scored against each of {right_name}) or as many as {right_name} (scored pair by pair)",
                      param=left_name)
    if len(right) > fe.cfg.embd_max_inputs:
        raise invalid(f"{len(right)} pairs; at most {fe.cfg.embd_max_inputs} (--embd-max-inputs)", param=right_name)
    info = fe.engine_info()
    pooling = info.executors[0].pooling
    if pooling == POOLING_NONE:
        raise invalid("pooling 'none' gives one vector per token: start the server with another --pooling to score")
    if pooling == POOLING_RANK:
        queries = left * len(right) if len(left) == 1 else left
        inputs = await fe.prepare(len(req.body), lambda: _pairs(fe, input_token_limit(info), queries, right,
                                                                 body.truncate_prompt_tokens, right_name))
        rows, stats = await embed(fe.engine, req.id, inputs)
        raw = np.array([float(r[0, 0]) for r in rows])
        activate = body.use_activation if body.use_activation is not None else body.activation is not False
        scores = 1.0 / (1.0 + np.exp(-raw)) if activate else raw
    else:  # each text once; one left text's vector is compared with every right one

        def tokenize() -> list[list[int]]:
            return [*tokenize_inputs(fe, info, left, left_name, body.truncate_prompt_tokens),
                    *tokenize_inputs(fe, info, right, right_name, body.truncate_prompt_tokens)]

        rows, stats = await embed(fe.engine, req.id, await fe.prepare(len(req.body), tokenize))
        vectors = normalize(np.concatenate(rows), 2)
        scores = vectors[len(left):] @ vectors[0] if len(left) == 1 else \
            np.einsum("ij,ij->i", vectors[: len(left)], vectors[len(left):])
    data = [ScoreData(i, float(s)) for i, s in enumerate(scores)]
    usage = EmbeddingUsage(stats.n_prompt_tokens, stats.n_prompt_tokens)
    return json_response(ScoreResponse(f"score-{req.id}", int(time.time()), fe.model_id, data, usage))


def _side(body: ScoreRequest, names: tuple[str, ...]) -> tuple[list[str], str]:
    """One side's texts, under whichever of its names the body uses (a 400 for none or two)."""
    given = [(name, value) for name in names if (value := getattr(body, name)) is not None]
    if len(given) != 1:
        raise invalid(f"give the texts of this side as one of {', '.join(names)}", param=names[0])
    name, value = given[0]
    texts = _texts(value)
    if not texts:
        raise invalid(f"{name} must not be empty", param=name)
    return texts, name


def _texts(value: ScoreTexts) -> list[str]:
    return [value] if isinstance(value, str) else value


def _pairs(fe: Frontend, limit: int, queries: list[str], documents: list[str], truncate: int | None,
           param: str) -> list[list[int]]:
    """Each pair's tokens, as /v1/rerank lays them out; ``truncate`` cuts each document so that
    its pair holds at most that many tokens (-1: as many as one input may have)."""
    template = fe.tokenizer.metadata(RERANK_TEMPLATE_KEY)
    inputs = []
    for i, (query, document) in enumerate(zip(queries, documents, strict=True)):
        if truncate is not None:
            budget = (limit if truncate < 0 else truncate) - len(pair_tokens(fe.tokenizer, template, query, ""))
            if budget < 1:
                raise invalid(f"the query of pair {i} leaves no room for its document within truncate_prompt_tokens",
                              param="truncate_prompt_tokens")
            document = first_tokens(fe.tokenizer, document, budget)
        tokens = pair_tokens(fe.tokenizer, template, query, document)
        check_length(i, len(tokens), limit, param, f"pair {i} (the query and {param}[{i}])")
        inputs.append(tokens)
    return inputs
