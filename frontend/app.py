"""The ASGI application one granian worker runs: lifespan, routing, API keys, body limit, errors.

At lifespan startup the worker loads its tokenizer and connects to the scheduler (``Frontend``);
in router mode it connects to the launcher's model table instead (``ModelRouter``) and each
request is served by the ``Frontend`` of the model it names, loaded first when needed (a
stream gets SSE ping comments while its model loads).
Every response carries ``x-request-id`` (the client's, if it sent a sane one) and the CORS headers
(``frontend.http.cors``); ``OPTIONS`` on any path is a CORS preflight; with ``--api-prefix`` every
route lives under that prefix, as in llama-server; a path whose last segment is a resource's id
(``/v1/responses/resp_...``) takes the route of ``<parent>/{id}``. Handlers of
generation endpoints run in a task that is cancelled when the client disconnects, which aborts
their engine requests at once, except a resumable stream's (``X-Conversation-Id``:
``frontend.routes.generation.streams``), which runs on without its client. Any exception becomes an error
object in the route's API shape (OpenAI's; Anthropic's on /v1/messages); nothing a client sends
can take the worker down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import signal
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from frontend.http import sse
from frontend.observe import metrics, openapi
from frontend.http.errors import UNREADABLE_JSON, ApiError, unavailable
from frontend.http.asgi import ErrorBody, Headers, Request, Response, StreamResponse, error_response, read_body
from frontend.observe.openapi import Operation
from frontend.http.cors import Cors
from frontend.api import anthropic as anthropic_api
from frontend.api import responses as responses_api
from frontend.routes.generation import anthropic, chat, completions, native, responses, streams, transcriptions
from frontend.routes.pooling import embeddings, rerank, score
from frontend.routes.server import lora, router_models, slot_files, status, tokens, webui
from frontend.api.transcriptions import Transcription, TranscriptionDelta
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
from frontend.http.auth import ApiKeys
from frontend.router import ModelRouter
from frontend.api.embedding_schemas import (
    EmbeddingList,
    EmbeddingRequest,
    RerankRequest,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
)
from frontend.state import Frontend
from frontend.streams.workers import WorkerStreams
from frontend.observe.trace import RequestTrace
from ggserve.config import ServeConfig, load_config
from ggserve.logs import setup_logging
from ggserve.process import die_with_parent, ignore_stop_signals

log = logging.getLogger(__name__)

CONFIG_ENV = "GGSERVE_FRONTEND_CONFIG"  # path of the ServeConfig JSON, set by ``python -m frontend``

Handler = Callable[[Any, Request], Awaitable[Response | StreamResponse]]
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


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
                "Set the global LoRA scales; adapters not listed go to 0", list[LoraField], LoraApplied), scope="loaded"),
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
        **(_router_routes(metrics_no_auth) if router else {}),
    }


# --path: a GET that no route answers reads a file
_STATIC_FILES = {"GET": Route(webui.serve_static, Operation("A static file of --path"), auth=False, scope="server")}


def _router_routes(metrics_no_auth: bool) -> dict[str, dict[str, Route]]:
    """Router mode's server-wide endpoints, in place of the single model's."""
    listing = {"GET": Route(router_models.models, Operation("Every model and its status", response=ModelList),
                            scope="server")}
    downloads = Route(router_models.no_downloads, Operation(
        "llama-server's model downloads: 501 (ggserve serves local files only)"), scope="server")
    health_route = {"GET": Route(router_models.health, Operation(
        "Readiness: 200 while the router runs", response=HealthStatus), auth=False, scope="server")}
    one = {"GET": Route(router_models.model, Operation(
        "A model and its status, by its name or an alias", response=Model, parameters=MODEL_PARAMETERS), scope="server")}
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


class App:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.routes = build_routes(cfg.metrics_no_auth, cfg.router)
        # Routes ending in a parameter ("/slots/{id_slot}"), by the path before it.
        self.templates = {p.rpartition("/")[0]: by_method for p, by_method in self.routes.items() if p.endswith("}")}
        self.cors = Cors(cfg.cors_origins, cfg.cors_methods, cfg.cors_headers, cfg.cors_credentials)
        self.api_keys = ApiKeys(cfg.api_keys)
        self.fe: Frontend | None = None  # the single model's
        self.router: ModelRouter | None = None  # router mode's models
        self.streams = WorkerStreams(cfg.run_dir)  # listens once the worker starts

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not served; returning without accepting refuses it

    async def _lifespan(self, receive: Callable[[], Awaitable[dict[str, Any]]],
                        send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _worker_signals()
                try:
                    await self.streams.start()
                    if self.cfg.router:
                        self.router = ModelRouter(self.cfg)
                        await self.router.start()
                    else:
                        self.fe = await Frontend.start(self.cfg)
                except Exception as exc:
                    log.exception("frontend worker failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.streams.close()
                if self.fe is not None:
                    await self.fe.close()
                if self.router is not None:
                    await self.router.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = uuid.uuid4().hex
        client_id = headers.get("x-request-id", "")
        extra_headers = [(b"x-request-id", (client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else request_id)
                          .encode()), *self.cors.headers(headers)]
        trace = RequestTrace(request_id, scope["method"], scope["path"])
        route: Route | None = None
        if scope["method"] == "OPTIONS":
            # A CORS preflight, answered as llama-server does before routing: 200 on any path,
            # without an API key (browsers send none).
            preflight = Response(b"", 200, content_type=b"text/plain", headers=self.cors.preflight())
            await _send_response(send, preflight, extra_headers, trace)
            trace.close()
            return
        try:
            path = self._unprefixed(scope["path"])
            route = self._route(scope["method"], path)
            if route.auth and not self.api_keys.allows(headers):
                raise ApiError(401, "invalid or missing API key", headers=[(b"www-authenticate", b"Bearer")])
            if self.router is None:  # router mode: the model named decides (_target)
                _check_kind(route, self.cfg)
            body = await read_body(receive, headers, self.cfg.max_body_size, self.cfg.timeout)
        except ApiError as exc:
            response = error_response(exc, route.error_body) if route is not None else error_response(exc)
            await _send_response(send, response, extra_headers, trace, exc)
            trace.close()
            return
        except ConnectionResetError:
            return
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        req = Request(scope["method"], path, headers, body, request_id, trace, query)
        respond = self._respond(route, req, send, extra_headers)
        if route.generates:
            trace.disconnected = await _cancel_on_disconnect(respond, receive)
        else:
            await respond
        if not trace.resumable:
            trace.close()

    def _unprefixed(self, path: str) -> str:
        """The route path under --api-prefix (which, as in llama-server, every route is served under)."""
        prefix = self.cfg.api_prefix
        if not prefix:
            return path
        if path != prefix and not path.startswith(prefix + "/"):
            raise ApiError(404, f"no endpoint {path} (routes are under {prefix})")
        return path[len(prefix):] or "/"

    def _methods(self, path: str) -> dict[str, Route]:
        head, _, last = path.rpartition("/")
        by_method = self.routes.get(path) or (self.templates.get(head) if last else None)
        if by_method is None and self.cfg.static_path:
            return _STATIC_FILES
        if by_method is None:
            raise ApiError(404, f"no endpoint {path}")
        return by_method

    def _route(self, method: str, path: str) -> Route:
        """The route of ``method`` at ``path``; HEAD is GET's, answered without the body."""
        by_method = self._methods(path)
        route = by_method.get("GET" if method == "HEAD" else method)
        if route is None:
            allowed = ", ".join([*by_method, *(["HEAD"] if "GET" in by_method else [])])
            raise ApiError(405, f"{path} accepts {allowed}, not {method}", headers=[(b"allow", allowed.encode())])
        return route

    async def _respond(self, route: Route, req: Request, send: Callable[[dict[str, Any]], Awaitable[None]],
                       extra_headers: Headers) -> None:
        assert req.trace is not None
        error: ApiError | None = None
        try:
            if self.router is not None and self._loads_first(route, req):
                response: Response | StreamResponse = StreamResponse(self._load_then_stream(route, req, self.router))
            else:
                response = await route.handler(await self._target(route, req), req)
            if isinstance(response, StreamResponse) and route.generates and req.headers.get(streams.HEADER):
                response = await streams.record(self.streams, req, response)
            if isinstance(response, StreamResponse) and req.method == "HEAD":  # its headers, no events
                await response.chunks.aclose()
                response = Response(b"", content_type=response.content_type, headers=response.headers)
            if isinstance(response, StreamResponse):
                await _send_stream(send, response, extra_headers, req.trace)
                return
        except ApiError as exc:
            response, error = error_response(exc, route.error_body), exc
        except Exception:
            log.exception("%s %s failed", req.method, req.path)
            error = ApiError(500, "internal error; the server log has the details")
            response = error_response(error, route.error_body)
        await _send_response(send, response, extra_headers, req.trace, error, head=req.method == "HEAD")

    async def _target(self, route: Route, req: Request) -> Frontend | ModelRouter | WorkerStreams:
        """What the route's handler is called with (see Route.scope)."""
        if route.scope == "streams":
            return self.streams
        if self.router is None:
            assert self.fe is not None, "lifespan startup runs before any request"
            return self.fe
        if route.scope == "server":
            return self.router
        name = router_models.requested_model(req, self.router)
        if req.trace is not None:
            req.trace.model = name
        if route.scope == "loaded":
            fe = await self.router.connected(name)
            if fe is None:
                raise unavailable(f"model '{name}' is not loaded")
        else:
            fe = await self.router.frontend_for(name, _autoload(req, self.cfg.models_autoload))
        _check_kind(route, fe.cfg)  # an embedding model beside generating ones: its own settings
        return fe

    def _loads_first(self, route: Route, req: Request) -> bool:
        """Router mode: a stream whose model is not loaded yet (it gets pings while it loads)."""
        assert self.router is not None
        return (route.scope == "model" and _wants_stream(req.body)
                and self.router.loaded(router_models.requested_model(req, self.router)) is None)

    async def _load_then_stream(self, route: Route, req: Request, router: ModelRouter
                                ) -> AsyncGenerator[bytes, None]:
        """A stream whose model must load first: SSE ping comments while it loads, then the
        handler's stream. A failure before the first ping is an ordinary HTTP error; after it,
        an error event."""
        name = router_models.requested_model(req, router)
        if req.trace is not None:
            req.trace.model = name
        load = asyncio.ensure_future(router.frontend_for(name, _autoload(req, self.cfg.models_autoload)))
        try:
            pinged = False
            while not load.done():
                await asyncio.wait([load], timeout=self.cfg.sse_ping_interval)
                if not load.done():
                    pinged = True
                    yield sse.PING
            try:
                fe = load.result()
                _check_kind(route, fe.cfg)
                response = await route.handler(fe, req)
            except ApiError as exc:
                if not pinged:
                    raise
                yield sse.error_event(exc)
                return
            assert isinstance(response, StreamResponse), "a streamed request answers with a stream"
            try:
                async for chunk in response.chunks:
                    yield chunk
            finally:
                await response.chunks.aclose()
        finally:
            load.cancel()


def _check_kind(route: Route, cfg: ServeConfig) -> None:
    """A 501, as llama-server answers, for a route the other kind of server (or model) serves."""
    if route.needs in (EMBEDDINGS, RERANKING) and not cfg.embeddings:
        what = "embeddings" if route.needs == EMBEDDINGS else "reranking"
        raise ApiError(501, f"This server does not support {what}. Start it with `{route.needs}`")
    if route.needs == GENERATION and cfg.embeddings:
        raise ApiError(501, "This server computes embeddings only and does not generate text: start it "
                       "without `--embeddings` / `--reranking`")


def _wants_stream(body: bytes) -> bool:
    try:
        return msgspec.json.decode(body, type=_StreamField).stream is True
    except UNREADABLE_JSON:  # (msgspec's DecodeError is a ValueError)
        return False


class _StreamField(msgspec.Struct):
    stream: Any = False


def _autoload(req: Request, default: bool) -> bool:
    """llama-server's ``?autoload=true|false`` overrides --no-models-autoload per request."""
    value = req.query.get("autoload", "").lower()
    return default if value not in ("true", "false", "1", "0") else value in ("true", "1")


async def _send_response(send: Callable[[dict[str, Any]], Awaitable[None]], response: Response,
                         extra_headers: Headers, trace: RequestTrace, error: ApiError | None = None,
                         head: bool = False) -> None:
    """``head``: the answer to a HEAD request: GET's headers (its content-length too), no body."""
    trace.status = response.status
    trace.error = error.message if error is not None else ""
    await send({
        "type": "http.response.start",
        "status": response.status,
        "headers": [
            (b"content-type", response.content_type),
            # a 204 has no body and no length (RFC 9110 8.6)
            *([] if response.status == 204 else [(b"content-length", str(len(response.body)).encode())]),
            *response.headers,
            *extra_headers,
        ],
    })
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _send_stream(send: Callable[[dict[str, Any]], Awaitable[None]], response: StreamResponse,
                       extra_headers: Headers, trace: RequestTrace) -> None:
    """Send a stream; an ApiError before its first chunk propagates (the status is not sent yet)."""
    chunks = response.chunks
    try:
        first = await anext(chunks)
        trace.status = 200
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", response.content_type),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),  # tell proxies not to buffer the events
                (b"connection", b"close"),  # the stream ends with the connection, after [DONE]
                *response.headers,
                *extra_headers,
            ],
        })
        await send({"type": "http.response.body", "body": first, "more_body": True})
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            log.exception("stream failed")
            trace.error = "internal error"
            await send({"type": "http.response.body", "body": sse.internal_error_event(response.error_event),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await chunks.aclose()  # also when cancelled at a send: ends the generation's engine requests


async def _cancel_on_disconnect(work: Coroutine[Any, Any, None], receive: Callable[[], Awaitable[dict[str, Any]]]
                                ) -> bool:
    """Run ``work`` until it ends or the client goes away; True when the client went first."""
    task = asyncio.create_task(work)
    watcher = asyncio.create_task(_wait_disconnect(receive))
    await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    gone = not task.done()
    if gone:
        log.info("client disconnected; ending its response")  # and its generation, unless resumable
        task.cancel()
    watcher.cancel()
    await asyncio.gather(task, watcher, return_exceptions=True)
    return gone


async def _wait_disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _worker_signals() -> None:
    """This granian worker dies with granian's main process and leaves SIGINT/SIGTERM to the
    launcher (granian installed handlers that would stop serving mid-stream)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    die_with_parent()
    ignore_stop_signals()


def create_app() -> App:
    """granian's factory: one App per worker, configured from the file named by CONFIG_ENV."""
    cfg = load_config(os.environ[CONFIG_ENV])
    setup_logging(cfg.log_level, "frontend", cfg.log_format, cfg.log_file)
    return App(cfg)
