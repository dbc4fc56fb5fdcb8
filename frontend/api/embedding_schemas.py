"""Embedding and rerank request and response bodies (OpenAI, llama-server, Jina/Cohere, TEI).

As in ``frontend.api.schemas``: requests decode straight into these Structs (a wrong type is a
400 naming the field; unknown fields such as ``model`` and ``user`` are ignored).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from frontend.api.schemas import PromptInput



class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """OpenAI's POST /v1/embeddings, and llama-server's native POST /embedding (``content``,
    ``embd_normalize``)."""

    input: PromptInput | None = None  # OpenAI's forms and llama-server's (frontend.text.prompts)
    content: PromptInput | None = None  # llama-server's native name of ``input``
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # llama-server's: -1 none, 0 max absolute int16, 1 taxicab, 2 euclidean (L2), > 2 p-norm;
    # None: the server's --embd-normalize (2 by default)
    embd_normalize: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    # vLLM's: keep each input's last k tokens (-1: as many as one input may have); without the
    # model's special tokens; normalize (true: L2, false: none) where embd_normalize is not given
    truncate_prompt_tokens: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    truncation_side: Literal["left", "right"] | None = None  # "right": keep the first k tokens instead
    add_special_tokens: bool = True
    normalize: bool | None = None


class EmbeddingData(msgspec.Struct):
    index: int
    embedding: list[float] | str  # base64 of little-endian float32 with encoding_format "base64"
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


class NativeEmbedding(msgspec.Struct):
    """One input of llama-server's /embedding: one row pooled, one per token with pooling none."""

    index: int
    embedding: list[list[float]]


class TextDocument(msgspec.Struct):
    text: str


class RerankRequest(msgspec.Struct, kw_only=True):
    """POST /v1/rerank: Jina/Cohere's ``documents`` or TEI's ``texts`` (answered in TEI's shape)."""

    query: str
    documents: list[str | TextDocument] | None = None
    texts: list[str] | None = None
    top_n: Annotated[int, msgspec.Meta(ge=0)] | None = None
    return_documents: bool = False  # Jina/Cohere: each result carries its document
    max_tokens_per_doc: Annotated[int, msgspec.Meta(ge=1)] | None = None  # Cohere v2: each document's first k
    return_text: bool = False  # TEI: each result carries its text


class RerankResult(msgspec.Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: TextDocument | None = None


class RerankResponse(msgspec.Struct):
    results: list[RerankResult]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


class TeiRank(msgspec.Struct, omit_defaults=True):
    """One result of TEI's /rerank (a JSON array of these)."""

    index: int
    score: float
    text: str | None = None


ScoreTexts = str | list[str]


class ScoreRequest(msgspec.Struct, kw_only=True):
    """vLLM's POST /score: the left texts and the right ones, under any of the names vLLM's
    versions give them (``text_1``/``text_2``, ``data_1``/``data_2``, ``queries`` with
    ``documents`` or ``items``)."""

    text_1: ScoreTexts | None = None
    text_2: ScoreTexts | None = None
    data_1: ScoreTexts | None = None
    data_2: ScoreTexts | None = None
    queries: ScoreTexts | None = None
    documents: ScoreTexts | None = None
    items: ScoreTexts | None = None
    # at most k tokens per input (-1: as many as one may have): a pair's document is cut to fit on a
    # cross-encoder, each text keeps its last k tokens on a bi-encoder (as /v1/embeddings cuts)
    truncate_prompt_tokens: Annotated[int, msgspec.Meta(ge=-1)] | None = None
    use_activation: bool | None = None  # a cross-encoder's score through the sigmoid (default true)
    activation: bool | None = None  # use_activation's older name


class ScoreData(msgspec.Struct):
    index: int
    score: float
    object: str = "score"


class ScoreResponse(msgspec.Struct):
    id: str
    created: int
    model: str
    data: list[ScoreData]
    usage: EmbeddingUsage
    object: str = "list"
