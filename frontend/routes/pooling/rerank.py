"""Reranking: POST /v1/rerank (also /rerank, /v1/reranking, /reranking), as llama-server, and
vLLM's /v2/rerank (Cohere's v2 path, whose ``max_tokens_per_doc`` cuts each document).

Each document is paired with the query and scored by the model's classification head (rank
pooling); all pairs of a call go to the engine as one request, packed into shared decodes. A pair
is the GGUF's rerank template (``tokenizer.chat_template.rerank``, with ``{query}`` and
``{document}``) when it declares one (Qwen3-Reranker), else llama-server's layout:
BOS query EOS SEP document EOS, each special token where the vocabulary adds it (bge-reranker:
[CLS] query [SEP] document [SEP]). The answer is Jina/Cohere's (``results`` sorted by
``relevance_score``, with ``index`` and, with ``return_documents``, the ``document``), or TEI's
array of ``{index, score, text}`` when the body names TEI's ``texts``.
"""

from __future__ import annotations

from frontend.api.embedding_schemas import (
    EmbeddingUsage,
    RerankRequest,
    RerankResponse,
    RerankResult,
    TeiRank,
    TextDocument,
)
from frontend.embedding import embed
from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import ApiError, invalid
from frontend.routes.pooling.embeddings import POOLING_RANK, check_length, input_token_limit
from frontend.state import Frontend
from frontend.text.tokenizer import Tokenizer

RERANK_TEMPLATE_KEY = "tokenizer.chat_template.rerank"


async def rerank_v2(fe: Frontend, req: Request) -> Response:
    """vLLM's /v2/rerank: ``top_n`` 0 (its default) means every document."""
    return await rerank(fe, req, zero_means_all=True)


async def rerank(fe: Frontend, req: Request, zero_means_all: bool = False) -> Response:
    """llama-server's routes: ``top_n`` 0 gives no results, as there."""
    body = req.decode(RerankRequest)
    info = fe.engine_info()
    if info.executors[0].pooling != POOLING_RANK:
        raise ApiError(501, "This server does not support reranking. Start it with `--reranking`")
    tei = body.texts is not None
    documents = [d if isinstance(d, str) else d.text for d in (body.texts if tei else body.documents) or []]
    if not documents:
        raise invalid('"documents" must be a non-empty list of strings', param="documents")
    if len(documents) > fe.cfg.embd_max_inputs:
        raise invalid(f"{len(documents)} documents; at most {fe.cfg.embd_max_inputs} (--embd-max-inputs)",
                      param="documents")
    limit = input_token_limit(info)

    def pairs() -> list[list[int]]:
        template = fe.tokenizer.metadata(RERANK_TEMPLATE_KEY)
        cut = [first_tokens(fe.tokenizer, doc, body.max_tokens_per_doc) for doc in documents]
        inputs = [pair_tokens(fe.tokenizer, template, body.query, doc) for doc in cut]
        for i, tokens in enumerate(inputs):
            check_length(i, len(tokens), limit, "documents", f"the pair of the query and documents[{i}]")
        return inputs

    rows, stats = await embed(fe.engine, req.id, await fe.prepare(len(req.body), pairs))
    scores = [float(r[0, 0]) for r in rows]
    top_n = None if body.top_n == 0 and zero_means_all else body.top_n
    order = sorted(range(len(documents)), key=lambda i: -scores[i])[:top_n]
    if tei:
        return json_response([TeiRank(i, scores[i], documents[i] if body.return_text else None) for i in order])
    results = [RerankResult(i, scores[i], TextDocument(documents[i]) if body.return_documents else None)
               for i in order]
    return json_response(RerankResponse(results, fe.model_id, EmbeddingUsage(stats.n_prompt_tokens,
                                                                                stats.n_prompt_tokens)))


def first_tokens(tokenizer: Tokenizer, document: str, limit: int | None) -> str:
    """The document's text cut to its first ``limit`` tokens (Cohere's max_tokens_per_doc)."""
    if limit is None:
        return document
    tokens = tokenizer.tokenize(document, add_special=False, parse_special=False)
    return document if len(tokens) <= limit else tokenizer.detokenize(tokens[:limit], special=False)


def pair_tokens(tokenizer: Tokenizer, template: str | None, query: str, document: str) -> list[int]:
    """The tokens scoring ``document`` against ``query`` (see the module docstring)."""
    if template is not None:
        text = template.replace("{query}", query).replace("{document}", document)
        return tokenizer.tokenize(text, add_special=False, parse_special=True)
    eos = tokenizer.eos_id if tokenizer.eos_id >= 0 else tokenizer.sep_id
    tokens = [tokenizer.bos_id] if tokenizer.add_bos else []
    tokens += tokenizer.tokenize(query, add_special=False, parse_special=False)
    tokens += [eos] if tokenizer.add_eos else []
    tokens += [tokenizer.sep_id] if tokenizer.add_sep else []
    tokens += tokenizer.tokenize(document, add_special=False, parse_special=False)
    tokens += [eos] if tokenizer.add_eos else []
    return tokens
