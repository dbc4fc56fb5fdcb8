"""llama-server's tokenizer endpoints: /tokenize, /detokenize, /apply-template."""

from __future__ import annotations

from frontend.http.asgi import Request, Response, json_response
from frontend.text.prompts import check_tokens, tokenize_mixed
from frontend.conversation import render_prompt
from frontend.api.schemas import (
    ApplyTemplateResponse,
    ChatCompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
)
from frontend.state import Frontend


async def tokenize(fe: Frontend, req: Request) -> Response:
    body = req.decode(TokenizeRequest)
    token_ids = tokenize_mixed(fe.tokenizer, body.content, body.add_special, body.parse_special)
    check_tokens(fe.tokenizer, token_ids, "content")
    if not body.with_pieces:
        return json_response(TokenizeResponse(list(token_ids)))
    tokens: list[int | TokenPiece] = []
    for token_id in token_ids:
        piece = fe.tokenizer.piece(token_id, special=True)
        try:
            text: str | list[int] = piece.decode("utf-8")
        except UnicodeDecodeError:
            text = list(piece)  # part of a character: the raw bytes, as llama-server does
        tokens.append(TokenPiece(token_id, text))
    return json_response(TokenizeResponse(tokens))


async def detokenize(fe: Frontend, req: Request) -> Response:
    body = req.decode(DetokenizeRequest)
    check_tokens(fe.tokenizer, body.tokens, "tokens")
    return json_response(DetokenizeResponse(fe.tokenizer.detokenize(body.tokens)))


async def apply_template(fe: Frontend, req: Request) -> Response:
    return json_response(ApplyTemplateResponse(render_prompt(fe, req.decode(ChatCompletionRequest))))
