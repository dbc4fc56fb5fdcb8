"""The tokenizer endpoints: /tokenize, /detokenize (llama-server's and vLLM's forms), /apply-template."""

from __future__ import annotations

from frontend.http.asgi import Request, Response, json_response
from frontend.http.errors import invalid
from frontend.text.prompts import check_tokens, tokenize_mixed
from frontend.conversation import prompt_tokens, render_prompt
from frontend.api.schemas import (
    ApplyTemplateResponse,
    ChatCompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
    VllmTokenizeResponse,
)
from frontend.routes.server.status import max_model_len
from frontend.state import Frontend


async def tokenize(fe: Frontend, req: Request) -> Response:
    body = req.decode(TokenizeRequest)
    if body.prompt is not None or body.messages is not None:
        return json_response(await _vllm_tokenize(fe, req, body))
    return json_response(await fe.prepare(len(req.body), lambda: _tokenize(fe, body)))


def _tokenize(fe: Frontend, body: TokenizeRequest) -> TokenizeResponse:
    token_ids = tokenize_mixed(fe.tokenizer, body.content, body.add_special, body.parse_special)
    check_tokens(fe.tokenizer, token_ids, "content")
    if not body.with_pieces:
        return TokenizeResponse(list(token_ids))
    tokens: list[int | TokenPiece] = []
    for token_id in token_ids:
        piece = fe.tokenizer.piece(token_id, special=True)
        try:
            text: str | list[int] = piece.decode("utf-8")
        except UnicodeDecodeError:
            text = list(piece)  # part of a character: the raw bytes, as llama-server does
        tokens.append(TokenPiece(token_id, text))
    return TokenizeResponse(tokens)


async def _vllm_tokenize(fe: Frontend, req: Request, body: TokenizeRequest) -> VllmTokenizeResponse:
    """vLLM's /tokenize: a prompt, or messages as a chat completion would submit them."""
    if body.prompt is not None and body.messages is not None:
        raise invalid("prompt and messages cannot be used together", param="messages")
    if body.messages is not None:
        if body.add_special_tokens:
            raise invalid("the chat template's prompt gets the model's special tokens as a chat completion's does",
                          param="add_special_tokens")
        chat = ChatCompletionRequest(messages=body.messages, add_generation_prompt=body.add_generation_prompt,
                                     continue_final_message=body.continue_final_message,
                                     chat_template_kwargs=body.chat_template_kwargs)
        token_ids = (await prompt_tokens(fe, req, chat))[1].tokens
    else:
        add_special = body.add_special_tokens is not False
        token_ids = await fe.prepare(len(req.body), lambda: fe.tokenizer.tokenize(
            body.prompt or "", add_special=add_special, parse_special=True))
    # (a picture's or a clip's positions, negative ids, have no text)
    strs = await fe.prepare(len(req.body), lambda: [
        fe.tokenizer.piece(t, special=True).decode("utf-8", errors="replace") if t >= 0 else ""
        for t in token_ids]) if body.return_token_strs else None
    return VllmTokenizeResponse(len(token_ids), max_model_len(fe, fe.engine_info()), token_ids, strs)


async def detokenize(fe: Frontend, req: Request) -> Response:
    body = req.decode(DetokenizeRequest)
    check_tokens(fe.tokenizer, body.tokens, "tokens")
    text = await fe.prepare(len(req.body), lambda: fe.tokenizer.detokenize(body.tokens))
    return json_response(DetokenizeResponse(text, text))


async def apply_template(fe: Frontend, req: Request) -> Response:
    body = req.decode(ChatCompletionRequest)
    return json_response(ApplyTemplateResponse(await fe.prepare(len(req.body), lambda: render_prompt(fe, body))))
