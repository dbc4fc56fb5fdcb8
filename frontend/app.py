"""The ASGI application one granian worker runs: lifespan, routing (the table is
``frontend.routes.table``), API keys, body limit, errors.

At lifespan startup the worker loads its tokenizer and connects to the scheduler (``Frontend``);
in router mode it connects to the launcher's model table instead (``ModelRouter``) and each
request is served by the ``Frontend`` of the model it names, loaded first when needed (a
stream gets SSE ping comments while its model loads).
Every response carries ``x-request-id`` (the client's, if it sent a sane one) and the CORS headers
(``frontend.http.cors``); ``OPTIONS`` on any path is a CORS preflight; with ``--api-prefix`` every
route lives under that prefix, as in llama-server; a path with a resource's id in a segment
(``/v1/responses/resp_...``) takes the route whose template has ``{id}`` there. Handlers of
generation endpoints run in a task that is cancelled when the client disconnects, which aborts
their engine requests at once, except a resumable stream's (``X-Conversation-Id``:
``frontend.routes.generation.streams``), which runs on without its client. A client that reads
nothing of its response for ``--timeout`` seconds is treated as gone: its connection is closed. Any exception
becomes an error object in the route's API shape (OpenAI's; Anthropic's on /v1/messages); nothing a client sends
can take the worker down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from frontend.http import sse
from frontend.http.asgi import (
    BodyBudget, ClientStalled, Headers, Request, Response, Send, StreamResponse, error_response, read_body,
    write_bounded,
)
from frontend.http.auth import ApiKeys
from frontend.http.cors import Cors
from frontend.http.errors import UNREADABLE_JSON, ApiError, unavailable
from frontend.observe.trace import RequestTrace
from frontend.router import ModelRouter
from frontend.routes.generation import streams
from frontend.routes.server import router_models
from frontend.routes.table import EMBEDDINGS, GENERATION, RERANKING, STATIC_FILES, Route, build_routes
from frontend.state import Frontend
from frontend.streams.workers import WorkerStreams
from ggserve.config import ServeConfig, load_config
from ggserve.logs import setup_logging
from ggserve.process import die_with_parent, ignore_stop_signals

log = logging.getLogger(__name__)

CONFIG_ENV = "GGSERVE_FRONTEND_CONFIG"  # path of the ServeConfig JSON, set by ``python -m frontend``

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODIES_AT_ONCE = 8  # a worker receives up to this many largest bodies' bytes at once (more: 503)


class App:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.routes = build_routes(cfg.metrics_no_auth, cfg.router)
        # Routes with a parameter ("/slots/{id_slot}", "/v1/responses/{id}/input_items"), as their segments.
        self.templates = [(p.split("/"), by_method) for p, by_method in self.routes.items() if "{" in p]
        self.cors = Cors(cfg.cors_origins, cfg.cors_methods, cfg.cors_headers, cfg.cors_credentials)
        self.api_keys = ApiKeys(cfg.api_keys)
        self.body_budget = BodyBudget(BODIES_AT_ONCE * cfg.max_body_size)
        self.fe: Frontend | None = None  # the single model's
        self.router: ModelRouter | None = None  # router mode's models
        self.streams = WorkerStreams(cfg.run_dir)  # listens once the worker starts

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Send
                       ) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        # websocket: not served; returning without accepting refuses it

    async def _lifespan(self, receive: Callable[[], Awaitable[dict[str, Any]]], send: Send) -> None:
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

    async def _http(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], send: Send
                    ) -> None:
        trace = RequestTrace(uuid.uuid4().hex, scope["method"], scope["path"])
        try:
            await self._exchange(scope, receive, write_bounded(send, self.cfg.timeout), trace)
        except ClientStalled as exc:
            log.warning("%s %s: %s; closing its connection", scope["method"], scope["path"], exc)
            trace.disconnected = True
            if not trace.resumable:
                trace.close()

    async def _exchange(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                        send: Send, trace: RequestTrace) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client_id = headers.get("x-request-id", "")
        extra_headers = [(b"x-request-id", (client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else trace.id)
                          .encode()), *self.cors.headers(headers)]
        route: Route | None = None
        if scope["method"] == "OPTIONS":
            # A CORS preflight, answered as llama-server does before routing: 200 on any path,
            # without an API key (browsers send none).
            preflight = Response(b"", 200, content_type=b"text/plain", headers=self.cors.preflight())
            await _send_response(send, preflight, extra_headers, trace)
            trace.close()
            return
        try:
            try:
                path = self._unprefixed(scope["path"])
                route = self._route(scope["method"], path)
            except ApiError:  # as llama-server: without the key, no path or method is told apart
                if not self.api_keys.allows(headers):
                    raise _unauthorized() from None
                raise
            if route.auth and not self.api_keys.allows(headers):
                raise _unauthorized()
            if self.router is None:  # router mode: the model named decides (_target)
                _check_kind(route, self.cfg)
            body = await read_body(receive, headers, self.cfg.max_body_size, self.cfg.timeout, self.body_budget)
        except ApiError as exc:
            response = error_response(exc, route.error_body) if route is not None else error_response(exc)
            await _send_response(send, response, extra_headers, trace, exc)
            trace.close()
            return
        except ConnectionResetError:
            return
        query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        req = Request(scope["method"], path, headers, body, trace.id, trace, query)
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
        by_method = self.routes.get(path) or self._template(path)
        if by_method is None and self.cfg.static_path:
            return STATIC_FILES
        if by_method is None:
            raise ApiError(404, f"no endpoint {path}")
        return by_method

    def _template(self, path: str) -> dict[str, Route] | None:
        """The routes of the template ``path`` fills (a parameter takes one non-empty segment)."""
        segments = path.split("/")
        for template, by_method in self.templates:
            if len(template) == len(segments) and all(
                    t == s or (t.startswith("{") and s) for t, s in zip(template, segments)):
                return by_method
        return None

    def _route(self, method: str, path: str) -> Route:
        """The route of ``method`` at ``path``; HEAD is GET's, answered without the body."""
        by_method = self._methods(path)
        route = by_method.get("GET" if method == "HEAD" else method)
        if route is None:
            allowed = ", ".join([*by_method, *(["HEAD"] if "GET" in by_method else [])])
            raise ApiError(405, f"{path} accepts {allowed}, not {method}", headers=[(b"allow", allowed.encode())])
        return route

    async def _respond(self, route: Route, req: Request, send: Send, extra_headers: Headers) -> None:
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
        except ClientStalled:
            raise  # no answer can reach it
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


def _unauthorized() -> ApiError:
    return ApiError(401, "invalid or missing API key", headers=[(b"www-authenticate", b"Bearer")])


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


async def _send_response(send: Send, response: Response, extra_headers: Headers, trace: RequestTrace,
                         error: ApiError | None = None, head: bool = False) -> None:
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


async def _send_stream(send: Send, response: StreamResponse, extra_headers: Headers, trace: RequestTrace) -> None:
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
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception:
                log.exception("stream failed")
                trace.error = "internal error"
                await send({"type": "http.response.body", "body": sse.internal_error_event(response.error_event),
                            "more_body": True})
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
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
    if not gone:
        task.result()  # its exception (a ClientStalled: _http)
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
