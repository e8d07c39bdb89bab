"""``glimp serve``: the routed model as an OpenAI-compatible HTTP service (FastAPI).

The app reads as its routes: the API key is a dependency, request bodies are typed parameters
(:mod:`glimp_llm.server.protocol`), errors are raised and answered by exception handlers, responses are the
``openai`` package's types, streams are ``sse-starlette``'s ``EventSourceResponse``. The chat itself (prompt,
tools, ``tool_choice``, parsing, the stop/tool-call hold-back) is :mod:`glimp_llm.chat`, as in the adapters.

Why the engines run on the server's own event loop (a :class:`~glimp_llm.manager.BackendManager` and its
:class:`~glimp_llm.router.Router`) rather than behind :class:`~glimp_llm.client.Glimp`: the server is already
async, so a private loop thread would only add two thread hops per token; and with one loop a client
disconnect is plain task cancellation reaching the engine call (closing a server stream, freeing a slot).

Limits answer at once instead of hanging: bodies over ``max_body_bytes`` (checked before the body is parsed,
by :class:`_Front`) and prompts over ``max_prompt_chars`` get 413, requests past the router's running +
queued bounds get 429 (with ``Retry-After``), a deadline (``router.request_timeout_s``) gets 504. Errors are
OpenAI-shaped JSON with the message and the fix, never a stack trace; logs carry sizes and timings, not text,
unless ``log_prompts`` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from openai.types import Model
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from glimp_llm.chat.options import describe
from glimp_llm.chat.turn import ChatTurn
from glimp_llm.config import GlimpConfig
from glimp_llm.errors import (
    ConfigurationError,
    ContextTooLongError,
    EngineFailureError,
    EngineTimeoutError,
    EngineUnavailableError,
    GlimpError,
    InvalidRequestError,
    OverloadedError,
    RequestTimeoutError,
)
from glimp_llm.manager import BackendManager
from glimp_llm.server.metrics import Metrics
from glimp_llm.server.protocol import ChatBody, CompletionBody, Wire, error_body
from glimp_llm.server.settings import ServerSettings
from glimp_llm.trace import RouterEvent

log = logging.getLogger("glimp_llm.server")
T = TypeVar("T")
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/models": "models"}


class HTTPError(Exception):
    """An answer other than 200, with an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 429 else None
        return JSONResponse(error_body(self.message, self.kind, self.code), status_code=self.status, headers=headers)


class ClientGone(Exception):
    """The client disconnected; its request was cancelled."""


def http_error(exc: BaseException) -> HTTPError:
    """Map an error to its status. Only :class:`GlimpError` messages reach the client."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, ContextTooLongError):
        return HTTPError(400, str(exc), "invalid_request_error", "context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return HTTPError(400, str(exc), "invalid_request_error")
    if isinstance(exc, OverloadedError):
        return HTTPError(429, str(exc), "overloaded_error", "rate_limit_exceeded")
    if isinstance(exc, RequestTimeoutError | EngineTimeoutError):
        return HTTPError(504, str(exc), "timeout_error")
    if isinstance(exc, EngineUnavailableError):
        return HTTPError(503, str(exc), "engine_unavailable")
    if isinstance(exc, EngineFailureError):
        return HTTPError(502, str(exc), "engine_error")
    if isinstance(exc, ConfigurationError):
        return HTTPError(500, f"the server is misconfigured: {exc}", "server_error")
    if isinstance(exc, GlimpError):
        return HTTPError(500, str(exc), "server_error")
    log.error("unexpected error", exc_info=exc)  # the trace stays in the log
    return HTTPError(500, "internal error; the server log has the details", "server_error")


# ------------------------------------------------------------------------------------------ plumbing
@dataclass
class Served:
    """What the routes share: the engines and router, the metrics, the settings."""

    manager: BackendManager
    metrics: Metrics
    settings: ServerSettings


def _served(request: Request) -> Served:
    return request.app.state.served


ServedDep = Annotated[Served, Depends(_served)]


def require_key(request: Request, served: ServedDep) -> None:
    """The API key, when one is set. ``compare_digest`` takes constant time: no timing side channel."""
    expected = served.settings.api_key
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPError(401, "missing or wrong API key: send `Authorization: Bearer KEY`", "authentication_error")


class _Front:
    """Pure ASGI middleware in front of the app: refuses bodies over the limit before anything parses them
    (413), and counts and logs every answer by endpoint and status (streams: when their headers go out)."""

    def __init__(self, app: ASGIApp, served: Served) -> None:
        self.app, self.served = app, served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = ENDPOINTS.get(scope["path"], scope["path"].strip("/") or "root")
        t0 = time.perf_counter()

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                self.served.metrics.requests.labels(endpoint, str(status)).inc()
                log.info("%s %s -> %d in %.3f s", scope["method"], endpoint, status, time.perf_counter() - t0)
            await send(message)

        if scope["method"] != "POST":
            return await self.app(scope, receive, counted)
        limit = self.served.settings.max_body_bytes
        too_large = HTTPError(413, f"request body over {limit} bytes", "request_too_large").response()
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await too_large(scope, receive, counted)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                return await too_large(scope, receive, counted)
            more = message.get("more_body", False)
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:  # the body once, then the client's own messages (its disconnect)
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, counted)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client goes away first, cancel it and wait until it has stopped (its engine
    slots are free again; asking a task cancelled a moment ago for its result would raise)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        # the body is read: the next ASGI message the server delivers is the disconnect
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        task.cancel()  # nothing when it is done
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    try:
        return task.result()
    except (GlimpError, HTTPError):
        raise
    except Exception as exc:  # a bug below: 500 with a message, the trace in the log (http_error logs it)
        raise http_error(exc) from exc


def _install_handlers(app: FastAPI) -> None:
    """Every error becomes an OpenAI-shaped JSON answer with its status, never a stack trace."""

    @app.exception_handler(HTTPError)
    @app.exception_handler(GlimpError)
    async def _known(_: Request, exc: Exception) -> Response:
        return http_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            return HTTPError(400, "the request body is not valid JSON", "invalid_request_error").response()
        if any(tuple(e["loc"]) == ("body",) for e in errors):
            return HTTPError(400, "the request body must be a JSON object", "invalid_request_error").response()
        return HTTPError(400, f"invalid request: {describe(errors)}", "invalid_request_error").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return HTTPError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, __: Exception) -> Response:
        log.info("client disconnected; request cancelled")
        return Response(status_code=499)


# ------------------------------------------------------------------------------------------- answering
def _checked(served: Served, body: ChatBody | CompletionBody) -> ChatTurn:
    """The body's routed turn, after the checks the router cannot make: the model name and the size."""
    settings = served.settings
    if body.model is not None and body.model != settings.model_name:
        raise HTTPError(
            404,
            f"model {body.model!r} does not exist here; use {settings.model_name!r} (see /v1/models)",
            "invalid_request_error",
            "model_not_found",
        )
    chars = body.prompt_chars()
    if chars > settings.max_prompt_chars:
        raise HTTPError(
            413,
            f"the prompt has {chars} characters; the limit is {settings.max_prompt_chars}",
            "request_too_large",
            "context_length_exceeded",
        )
    turn = body.turn()
    if settings.log_prompts:
        req = turn.request
        log.info("prompt: %r", req.messages if req.messages is not None else req.prompt)
    return turn


async def _answer(request: Request, served: Served, endpoint: str, body: ChatBody | CompletionBody) -> Response:
    chat = isinstance(body, ChatBody)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    wire = Wire(rid, served.settings.model_name, chat, served.settings.include_trace)
    turn = _checked(served, body)
    if body.stream:
        return await _stream(request, served, endpoint, body, turn, wire)
    with served.metrics.in_flight.track_inprogress():
        result = await until_disconnect(request, served.manager.router.generate(turn.request))
    served.metrics.observe_result(endpoint, result)
    if served.settings.log_prompts:
        log.info("%s completion: %r", rid, result.text)
    return JSONResponse(wire.full(turn.answer(result)).model_dump(mode="json", exclude_unset=True))


async def _stream(
    request: Request, served: Served, endpoint: str, body: ChatBody | CompletionBody, turn: ChatTurn, wire: Wire
) -> Response:
    """Start routing and wait for the first event, so that admission and validation errors are still
    answered with their status (429, 400...) rather than inside a 200 stream."""
    events = served.manager.router.stream(turn.request)
    served.metrics.in_flight.inc()
    try:
        first = await until_disconnect(request, events.__anext__())
    except BaseException:
        served.metrics.in_flight.dec()
        await events.aclose()
        raise

    async def all_events() -> AsyncIterator[RouterEvent]:
        yield first
        async for event in events:
            yield event

    async def sse() -> AsyncIterator[str]:
        try:
            for chunk in wire.first_chunks():  # each yield is one event's data; sse-starlette frames it
                yield chunk.model_dump_json(exclude_unset=True)
            async for piece in turn.astream(all_events()):
                if piece.answer is None:
                    yield wire.chunk(piece.text).model_dump_json(exclude_unset=True)
                    continue
                for chunk in wire.last_chunks(piece.answer, piece.text, body.include_usage()):
                    yield chunk.model_dump_json(exclude_unset=True)
                served.metrics.observe_result(endpoint, piece.answer.result)
                if served.settings.log_prompts:
                    log.info("%s completion: %r", wire.rid, piece.answer.result.text)
            yield "[DONE]"
        except asyncio.CancelledError:  # the client went away: router.stream's close cancels the work
            log.info("%s %s: client disconnected mid-stream; request cancelled", wire.rid, endpoint)
            raise
        except Exception as exc:  # headers are sent: report the error in the stream
            err = http_error(exc)
            yield json.dumps(error_body(err.message, err.kind, err.code), ensure_ascii=False)
        finally:
            served.metrics.in_flight.dec()
            with contextlib.suppress(Exception):
                await events.aclose()

    return EventSourceResponse(sse(), sep="\n", headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------------------------------------- routes
routes = APIRouter()
Authorized = [Depends(require_key)]


@routes.post("/v1/chat/completions", dependencies=Authorized)
async def chat_completions(body: ChatBody, request: Request, served: ServedDep) -> Response:
    return await _answer(request, served, "chat", body)


@routes.post("/v1/completions", dependencies=Authorized)
async def completions(body: CompletionBody, request: Request, served: ServedDep) -> Response:
    return await _answer(request, served, "completions", body)


@routes.get("/v1/models", dependencies=Authorized)
async def list_models(served: ServedDep) -> dict[str, Any]:
    mgr = served.manager
    glimp = {"small": mgr.small.info.model, "large": mgr.large.info.model}
    card = Model(id=served.settings.model_name, object="model", created=0, owned_by="glimp-llm", glimp=glimp)
    return {"object": "list", "data": [card.model_dump(exclude_unset=True)]}


@routes.get("/health")
async def health(served: ServedDep) -> Response:
    """Open (no key), for load balancers."""
    try:
        state = await served.manager.health()
    except Exception as exc:
        return JSONResponse({"ok": False, "detail": http_error(exc).message}, status_code=503)
    return JSONResponse(state, status_code=200 if state["ok"] else 503)


@routes.get("/metrics", dependencies=Authorized)
async def prometheus(served: ServedDep) -> Response:
    return Response(generate_latest(served.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    config: GlimpConfig | None = None,
    *,
    settings: ServerSettings | None = None,
    manager: BackendManager | None = None,
) -> FastAPI:
    """The app. It starts the engines when it starts and closes them when it stops."""
    served = Served(manager or BackendManager(config or GlimpConfig()), Metrics(), settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await served.manager.start()
        try:
            yield
        finally:
            await served.manager.close()

    app = FastAPI(title="glimp-llm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.include_router(routes)
    _install_handlers(app)
    app.add_middleware(_Front, served=served)
    return app


def run(config: GlimpConfig, settings: ServerSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (uvicorn, one process: the engines live in it)."""
    import uvicorn

    app = create_app(config, settings=settings)
    if on_ready is not None:
        on_ready(f"http://{settings.host}:{settings.port}")
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")
