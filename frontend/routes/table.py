"""The route table: every path the server answers, its methods, their handlers and what
/openapi.json says of each (``build_routes``); router mode's server-wide routes replace the single
model's (``router_routes``). The app (``frontend.app``) looks a request up here.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from frontend.api import anthropic as anthropic_api
from frontend.api import responses as responses_api
from frontend.api.embedding_schemas import (
    EmbeddingList,
    EmbeddingRequest,
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from frontend.api.schemas import (
    ApplyTemplateResponse,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ControlRequest,
    ControlResult,
    DetokenizeRequest,
    DetokenizeResponse,
    HealthStatus,
    InputTokenCount,
    LoraAdapter,
    LoraApplied,
    LoraField,
    Model,
    ModelList,
    NativeCompletionRequest,
    TokenizeRequest,
    TokenizeResponse,
    VersionInfo,
)
from frontend.api.transcriptions import Transcription, TranscriptionDelta
from frontend.http.asgi import ErrorBody, Request, Response, StreamResponse
from frontend.http.errors import ApiError
from frontend.observe import metrics, openapi
from frontend.observe.openapi import Operation
from frontend.router import ModelRouter
from frontend.routes.generation import anthropic, chat, completions, native, responses, streams, transcriptions
from frontend.routes.pooling import embeddings, rerank, score
from frontend.routes.server import lora, router_models, slot_files, status, tokens, webui
from frontend.state import Frontend

Handler = Callable[[Any, Request], Awaitable[Response | StreamResponse]]


# What a route needs of the server: a generation server, or an embedding server started with
# this flag (the other kind answers 501).
GENERATION = ""
EMBEDDINGS = "--embeddings"
RERANKING = "--reranking"


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler  # called with the model's Frontend, or with the server's state (scope "server")
    operation: Operation  # what /openapi.json says about it
    auth: bool = True  # needs an API key when keys are configured
    generates: bool = False  # runs engine requests: cancel it when the client goes away
    # "model": the named model's Frontend (router mode: loaded first); "loaded": the same, but a
    # 503 when the model is not loaded (never loads it); "server": the Frontend alone, or the
    # ModelRouter in router mode; "streams": the worker's resumable streams (WorkerStreams).
    scope: str = "model"
    error_body: ErrorBody = ApiError.body  # its API's error shape (OpenAI's unless it is another API)
    needs: str | None = None  # GENERATION, EMBEDDINGS or RERANKING (None: any server)


MODEL_PARAMETERS = ({"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},)


def build_routes(metrics_no_auth: bool, router: bool = False) -> dict[str, dict[str, Route]]:
    """path -> method -> route; ``metrics_no_auth``: /metrics needs no API key (--metrics-no-auth);
    ``router``: router mode's model endpoints."""
    chat_route = {"POST": Route(chat.chat_completions, Operation(
        "Create a chat completion", ChatCompletionRequest, ChatCompletion, ChatCompletionChunk), generates=True,
        needs=GENERATION)}
    input_tokens_route = {"POST": Route(chat.input_tokens, Operation(
        "Count the prompt tokens of a chat completion request", ChatCompletionRequest, InputTokenCount))}
    control_route = {"POST": Route(chat.control, Operation(
        "End the thinking of a running chat completion (llama-server's reasoning control)", ControlRequest,
        ControlResult), scope="loaded")}
    models_route = {"GET": Route(status.models, Operation("The served model", response=ModelList))}
    model_route = {"GET": Route(status.model, Operation("The served model by its id or an alias (OpenAI's retrieve)",
                                                        response=Model, parameters=MODEL_PARAMETERS))}
    native_route = {"POST": Route(native.completion, Operation(
        "Complete a prompt (llama-server's native /completion)", NativeCompletionRequest), generates=True,
        needs=GENERATION)}
    embeddings_route = {"POST": Route(embeddings.embeddings, Operation(
        "Create embeddings (with --embeddings)", EmbeddingRequest, EmbeddingList), generates=True, needs=EMBEDDINGS)}
    rerank_route = {"POST": Route(rerank.rerank, Operation(
        "Rank documents against a query (with --reranking)", RerankRequest, RerankResponse), generates=True,
        needs=RERANKING)}
    score_route = {"POST": Route(score.score, Operation(
        "Score pairs of texts (vLLM's /score: a reranker's score, or an embedding model's cosine similarity)",
        ScoreRequest, ScoreResponse), generates=True, needs=EMBEDDINGS)}
    responses_route = {"POST": Route(responses.create, Operation(
        "Create a response (OpenAI's Responses API)", responses_api.ResponsesRequest, responses_api.Response,
        responses_api.ResponseStreamEvent), generates=True, needs=GENERATION)}
    responses_input_tokens_route = {"POST": Route(responses.input_tokens, Operation(
        "Count the prompt tokens of a response request", responses_api.ResponsesRequest, InputTokenCount))}
    transcriptions_route = {"POST": Route(transcriptions.transcriptions, Operation(
        "Transcribe audio (OpenAI's speech-to-text; a multipart/form-data body; needs an audio --mmproj)",
        response=Transcription, stream_event=TranscriptionDelta), generates=True, needs=GENERATION)}
    health_route = {"GET": Route(status.health, Operation(
        "Readiness: 200 once the model is loaded", response=HealthStatus, loading_status=True), auth=False)}
    version_route = {"GET": Route(status.version, Operation("The server's version (vLLM's /version)",
                                                            response=VersionInfo), auth=False)}
    return {
        "/health": health_route,
        "/v1/health": health_route,
        "/ping": {**health_route, "POST": health_route["GET"]},  # vLLM's (SageMaker's) liveness check
        "/version": version_route,
        "/v1/models": models_route,
        "/models": models_route,
        "/v1/models/{model}": model_route,
        "/models/{model}": model_route,
        "/models/load": {"POST": Route(router_models.router_only, Operation("Router mode only (a 501 here)"))},
        "/models/unload": {"POST": Route(router_models.router_only, Operation("Router mode only (a 501 here)"))},
        "/models/sse": {"GET": Route(router_models.router_only, Operation("Router mode only (a 501 here)"))},
        "/v1/chat/completions": chat_route,
        "/chat/completions": chat_route,
        "/v1/chat/completions/control": control_route,
        "/chat/completions/control": control_route,
        "/v1/chat/completions/input_tokens": input_tokens_route,
        "/chat/completions/input_tokens": input_tokens_route,
        "/v1/completions": {"POST": Route(completions.completions, Operation(
            "Create a text completion", CompletionRequest, Completion, Completion), generates=True,
            needs=GENERATION)},
        "/v1/messages": {"POST": Route(anthropic.messages, Operation(
            "Create a message (Anthropic's Messages API)", anthropic_api.MessagesRequest, anthropic_api.Message,
            anthropic_api.MessageStreamEvent, error=anthropic_api.AnthropicError), generates=True,
            error_body=anthropic_api.error_body, needs=GENERATION)},
        "/v1/messages/count_tokens": {"POST": Route(anthropic.count_tokens, Operation(
            "Count the prompt tokens of a message request (Anthropic's API)", anthropic_api.CountTokensRequest,
            anthropic_api.TokenCount, error=anthropic_api.AnthropicError), error_body=anthropic_api.error_body)},
        "/v1/responses": responses_route,
        "/responses": responses_route,
        "/v1/responses/input_tokens": responses_input_tokens_route,
        "/responses/input_tokens": responses_input_tokens_route,
        "/v1/responses/{id}": {
            "GET": Route(responses.retrieve, Operation("A stored response", response=responses_api.Response,
                                                       parameters=responses.PARAMETERS)),
            "DELETE": Route(responses.delete, Operation("Delete a stored response",
                                                        response=responses_api.DeletedResponse,
                                                        parameters=responses.PARAMETERS)),
        },
        "/v1/responses/{id}/input_items": {
            "GET": Route(responses.input_items, Operation("The input items of a stored response",
                                                          response=responses_api.ResponseItemList,
                                                          parameters=responses.LIST_PARAMETERS)),
        },
        "/completion": native_route,
        "/completions": native_route,
        "/infill": {"POST": Route(native.infill, Operation(
            "Fill in the middle (llama-server's /infill; 501 without FIM tokens)", NativeCompletionRequest),
            generates=True, needs=GENERATION)},
        "/v1/audio/transcriptions": transcriptions_route,
        "/audio/transcriptions": transcriptions_route,
        "/v1/embeddings": embeddings_route,
        "/embeddings": embeddings_route,
        "/embedding": {"POST": Route(embeddings.native_embedding, Operation(
            "llama-server's native embeddings (with --embeddings)", EmbeddingRequest), generates=True,
            needs=EMBEDDINGS)},
        "/v1/rerank": rerank_route,
        "/v2/rerank": {"POST": Route(rerank.rerank_v2, Operation(  # Cohere's v2 path, as vLLM serves it
            "Rank documents against a query (with --reranking; top_n 0: all)", RerankRequest, RerankResponse),
            generates=True, needs=RERANKING)},
        "/rerank": rerank_route,
        "/score": score_route,
        "/v1/score": score_route,
        "/v1/reranking": rerank_route,
        "/reranking": rerank_route,
        "/tokenize": {"POST": Route(tokens.tokenize, Operation("Tokenize text", TokenizeRequest, TokenizeResponse))},
        "/detokenize": {"POST": Route(tokens.detokenize, Operation(
            "Token ids to text", DetokenizeRequest, DetokenizeResponse))},
        "/apply-template": {"POST": Route(tokens.apply_template, Operation(
            "Render the chat template", ChatCompletionRequest, ApplyTemplateResponse))},
        "/props": {
            "GET": Route(status.props, Operation("Server properties (llama-server's /props)")),
            "POST": Route(status.set_props, Operation("Change server properties (with --props)")),
        },
        "/slots": {"GET": Route(status.slots, Operation("Slot states (llama-server's /slots)"), scope="loaded")},
        "/slots/{id_slot}": {"POST": Route(slot_files.slot_action, Operation(
            "Save, restore or erase a slot's cache (with --slot-save-path)", slot_files.SlotFileRequest,
            parameters=slot_files.PARAMETERS), scope="loaded")},
        "/lora-adapters": {
            "GET": Route(lora.get_adapters, Operation(
                "LoRA adapters and their global scales (llama-server's)", response=list[LoraAdapter]), scope="loaded"),
            "POST": Route(lora.set_adapters, Operation(
                "Set the global LoRA scales; adapters not listed go to 0", list[LoraField], LoraApplied),
                scope="loaded"),
        },
        "/metrics": {"GET": Route(status.metrics_text, Operation(
            "Prometheus metrics (with --metrics)", content_type=metrics.CONTENT_TYPE.decode()),
            auth=not metrics_no_auth, scope="loaded")},
        "/v1/stream": {
            "GET": Route(streams.get_stream, Operation(
                "Replay a resumable stream (X-Conversation-Id) from a byte offset and follow it",
                content_type="text/event-stream", parameters=streams.PARAMETERS), generates=True, scope="streams"),
            "DELETE": Route(streams.delete_stream, Operation(
                "Stop a resumable stream: its generation is aborted and its record dropped",
                parameters=streams.PARAMETERS[:1], no_content=True), scope="streams"),
        },
        "/v1/streams/lookup": {"POST": Route(streams.lookup, Operation(
            "The resumable streams of the conversation ids given", streams.StreamLookupRequest,
            list[streams.StreamStatus]), scope="streams")},
        "/openapi.json": {"GET": Route(openapi_json, Operation("This OpenAPI document"), auth=False, scope="server")},
        **{path: {"GET": Route(webui.serve, Operation(summary, content_type=content_type), auth=False, scope="server")}
           for path, (_, content_type, summary) in webui.FILES.items()},
        **(router_routes(metrics_no_auth) if router else {}),
    }


# --path: a GET that no route answers reads a file
STATIC_FILES = {"GET": Route(webui.serve_static, Operation("A static file of --path"), scope="server")}


def router_routes(metrics_no_auth: bool) -> dict[str, dict[str, Route]]:
    """Router mode's server-wide endpoints, in place of the single model's."""
    listing = {"GET": Route(router_models.models, Operation("Every model and its status", response=ModelList),
                            scope="server")}
    downloads = Route(router_models.no_downloads, Operation(
        "llama-server's model downloads: 501 (ggserve serves local files only)"), scope="server")
    health_route = {"GET": Route(router_models.health, Operation(
        "Readiness: 200 while the router runs", response=HealthStatus), auth=False, scope="server")}
    one = {"GET": Route(router_models.model, Operation(
        "A model and its status, by its name or an alias", response=Model, parameters=MODEL_PARAMETERS),
        scope="server")}
    return {
        "/health": health_route,
        "/v1/health": health_route,
        "/ping": {**health_route, "POST": health_route["GET"]},
        "/version": {"GET": Route(status.version, Operation("The server's version (vLLM's /version)",
                                                            response=VersionInfo), auth=False, scope="server")},
        "/v1/models": listing,
        "/models": {**listing, "POST": downloads, "DELETE": downloads},
        "/v1/models/{model}": one,
        "/models/{model}": one,
        "/props": {"GET": Route(router_models.props, Operation("A model's properties (?model=)"), scope="server")},
        "/metrics": {"GET": Route(router_models.metrics_text, Operation(
            "Prometheus metrics of every loaded model (with --metrics)", content_type=metrics.CONTENT_TYPE.decode()),
            auth=not metrics_no_auth, scope="server")},
        "/models/load": {"POST": Route(router_models.load, Operation("Load a model"), scope="server")},
        "/models/unload": {"POST": Route(router_models.unload, Operation("Unload a model"), scope="server")},
        "/models/sse": {"GET": Route(router_models.status_events, Operation(
            "Server-sent events of the models' status changes", content_type="text/event-stream"), scope="server")},
    }


async def openapi_json(fe: Frontend | ModelRouter, req: Request) -> Response:
    return Response(_openapi_body(fe.cfg.metrics_no_auth, fe.api_keys.configured, fe.cfg.router))


@functools.cache
def _openapi_body(metrics_no_auth: bool, api_keys: bool, router: bool) -> bytes:
    """Built on the first request: the document depends only on the route table and whether keys are set."""
    return msgspec.json.encode(openapi.document(build_routes(metrics_no_auth, router), api_keys))
