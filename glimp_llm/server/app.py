"""``glimp serve``: the routed model as an OpenAI-compatible HTTP service (FastAPI).

Why the engines run on the server's own event loop (a :class:`~glimp_llm.manager.BackendManager` and its
:class:`~glimp_llm.router.Router`) rather than behind :class:`~glimp_llm.client.Glimp`: the server is already
async, so a private loop thread would only add two thread hops per token; and with one loop a client
disconnect is plain task cancellation reaching the engine call (closing a server stream, freeing a slot).

Limits answer at once instead of hanging: bodies over ``max_body_bytes`` and prompts over
``max_prompt_chars`` get 413, requests past the router's running + queued bounds get 429 (with
``Retry-After``), a deadline (``router.request_timeout_s``) gets 504. Errors are OpenAI-shaped JSON with
the message and the fix, never a stack trace; logs carry sizes and timings, not text, unless
``log_prompts`` is on.
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
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

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
from glimp_llm.router import RouteRequest
from glimp_llm.server.metrics import Metrics
from glimp_llm.server.protocol import (
    FINISH_REASON,
    ChatRequest,
    CompletionRequest,
    error_body,
    trace,
    usage,
)
from glimp_llm.server.settings import ServerSettings
from glimp_llm.trace import DoneEvent, RoutedResult, TokenEvent

log = logging.getLogger("glimp_llm.server")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class HTTPError(Exception):
    """An answer other than 200, with an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


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
    return HTTPError(500, "internal error; the server log has the details", "server_error")


class _StopHoldback:
    """Streams text while withholding what could be the start of a caller's stop string: the router cuts its
    final text at a stop string, so the stream must never have sent it."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.seen = ""
        self.sent = 0
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.seen += text
        if not self.stops:
            return self._send(len(self.seen))
        hits = [i for s in self.stops if (i := self.seen.find(s)) >= 0]
        if hits:
            self.stopped = True
            return self._send(min(hits))
        return self._send(max(self.sent, len(self.seen) - self.hold))

    def finish(self, final: str) -> str:
        """What is left to send so that the stream adds up to ``final``."""
        return final[self.sent :] if final.startswith(self.seen[: self.sent]) else ""

    def _send(self, upto: int) -> str:
        out = self.seen[self.sent : upto]
        self.sent = max(self.sent, upto)
        return out


def create_app(
    config: GlimpConfig | None = None,
    *,
    settings: ServerSettings | None = None,
    manager: BackendManager | None = None,
) -> FastAPI:
    """The app. It starts the engines when it starts and closes them when it stops."""
    settings = settings or ServerSettings()
    mgr = manager or BackendManager(config or GlimpConfig())
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await mgr.start()
        try:
            yield
        finally:
            await mgr.close()

    app = FastAPI(title="glimp-llm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = mgr
    app.state.metrics = metrics
    app.state.settings = settings
    expected_key = settings.api_key.encode() if settings.api_key else None

    def check_key(request: Request) -> None:
        if expected_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest takes constant time in the length of the expected key: no timing side channel
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected_key):
            raise HTTPError(401, "missing or wrong API key: send `Authorization: Bearer KEY`", "authentication_error")

    async def read_body(request: Request, model: type[M]) -> M:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise HTTPError(413, f"request body over {settings.max_body_bytes} bytes", "request_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise HTTPError(413, f"request body over {settings.max_body_bytes} bytes", "request_too_large")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPError(400, "the request body is not valid JSON", "invalid_request_error") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "the request body must be a JSON object", "invalid_request_error")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise HTTPError(400, f"invalid request: {problems}", "invalid_request_error") from None

    def check_model(name: str | None) -> None:
        if name is not None and name != settings.model_name:
            raise HTTPError(
                404,
                f"model {name!r} does not exist here; use {settings.model_name!r} (see /v1/models)",
                "invalid_request_error",
                "model_not_found",
            )

    def check_size(chars: int) -> None:
        if chars > settings.max_prompt_chars:
            raise HTTPError(
                413,
                f"the prompt has {chars} characters; the limit is {settings.max_prompt_chars}",
                "request_too_large",
                "context_length_exceeded",
            )

    async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
        """Await ``work``; if the client goes away first, cancel it (freeing its engine slots)."""
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
            if not task.done():
                task.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if task.cancelled():
            await asyncio.gather(task, return_exceptions=True)
            raise ClientGone
        return task.result()

    def answer(endpoint: str, status: int, body: dict[str, Any], t0: float, rid: str) -> JSONResponse:
        metrics.requests.labels(endpoint, str(status)).inc()
        log.info("%s %s -> %d in %.3f s", rid, endpoint, status, time.perf_counter() - t0)
        return JSONResponse(body, status_code=status)

    def fail(endpoint: str, exc: BaseException, t0: float, rid: str) -> JSONResponse:
        err = http_error(exc)
        if err.status >= 500 and not isinstance(exc, GlimpError | HTTPError):
            log.error("%s %s failed", rid, endpoint, exc_info=exc)  # the trace stays in the log
        headers = {"Retry-After": "1"} if err.status == 429 else None
        metrics.requests.labels(endpoint, str(err.status)).inc()
        log.info("%s %s -> %d (%s) in %.3f s", rid, endpoint, err.status, err.kind, time.perf_counter() - t0)
        return JSONResponse(error_body(err.message, err.kind, err.code), status_code=err.status, headers=headers)

    def route_request(body: ChatRequest | CompletionRequest) -> RouteRequest:
        threshold = body.glimp.threshold if body.glimp else None
        common = {
            "stop": body.stops(),
            "threshold": threshold,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
        }
        if isinstance(body, ChatRequest):
            return RouteRequest(messages=body.messages, tools=body.tools, max_tokens=body.budget(), **common)
        return RouteRequest(prompt=body.text(), raw=True, max_tokens=body.max_tokens, **common)

    async def handle(request: Request, endpoint: str, model: type[ChatRequest] | type[CompletionRequest]) -> Response:
        rid = f"{'chatcmpl' if model is ChatRequest else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        t0 = time.perf_counter()
        try:
            check_key(request)
            body = await read_body(request, model)
            body.reject_unsupported()
            check_model(body.model)
            if isinstance(body, ChatRequest):
                check_size(body.prompt_chars())
            else:
                check_size(len(body.text()))
            req = route_request(body)
            if settings.log_prompts:
                log.info("%s prompt: %r", rid, req.messages if req.messages is not None else req.prompt)
            if body.stream:
                return await start_stream(request, endpoint, body, req, rid, t0)
            metrics.in_flight.inc()
            try:
                result = await until_disconnect(request, mgr.router.generate(req))
            finally:
                metrics.in_flight.dec()
        except ClientGone:
            metrics.requests.labels(endpoint, "499").inc()
            log.info("%s %s: client disconnected; request cancelled", rid, endpoint)
            return Response(status_code=499)
        except Exception as exc:
            return fail(endpoint, exc, t0, rid)
        metrics.observe_result(endpoint, result)
        if settings.log_prompts:
            log.info("%s completion: %r", rid, result.text)
        return answer(endpoint, 200, full_body(body, result, rid), t0, rid)

    def full_body(body: ChatRequest | CompletionRequest, result: RoutedResult, rid: str) -> dict[str, Any]:
        finish = FINISH_REASON[result.finish_reason]
        if isinstance(body, ChatRequest):
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": finish,
                "logprobs": None,
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "finish_reason": finish, "logprobs": None}
            kind = "text_completion"
        out: dict[str, Any] = {
            "id": rid,
            "object": kind,
            "created": int(time.time()),
            "model": settings.model_name,
            "choices": [choice],
            "usage": usage(result),
        }
        if settings.include_trace:
            out["glimp"] = trace(result)
        return out

    async def start_stream(
        request: Request,
        endpoint: str,
        body: ChatRequest | CompletionRequest,
        req: RouteRequest,
        rid: str,
        t0: float,
    ) -> Response:
        """Start routing and wait for the first event, so that admission and validation errors are still
        answered with their status (429, 400...) rather than inside a 200 stream."""
        events = mgr.router.stream(req)
        metrics.in_flight.inc()
        try:
            first = await until_disconnect(request, events.__anext__())
        except BaseException:
            metrics.in_flight.dec()
            await events.aclose()
            raise
        chat = isinstance(body, ChatRequest)
        created = int(time.time())
        holdback = _StopHoldback(body.stops())

        def chunk(
            text: str | None, finish: str | None = None, extra: dict[str, Any] | None = None, *, role: bool = False
        ) -> str:
            if chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                if role:
                    delta = {"role": "assistant", "content": ""}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                kind = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
                kind = "text_completion"
            data: dict[str, Any] = {
                "id": rid,
                "object": kind,
                "created": created,
                "model": settings.model_name,
                "choices": [choice],
            }
            if extra:
                data.update(extra)
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def sse() -> AsyncIterator[str]:
            status = "200"
            try:
                if chat:
                    yield chunk(None, role=True)
                event: Any = first
                while True:
                    if isinstance(event, TokenEvent):
                        text = holdback.feed(event.text)
                        if text:
                            yield chunk(text)
                    elif isinstance(event, DoneEvent):
                        result = event.result
                        rest = holdback.finish(result.text)
                        if rest:
                            yield chunk(rest)
                        extra = {"glimp": trace(result)} if settings.include_trace else None
                        yield chunk(None, FINISH_REASON[result.finish_reason], extra)
                        if body.include_usage():
                            yield (
                                "data: "
                                + json.dumps(
                                    {
                                        "id": rid,
                                        "object": "chat.completion.chunk" if chat else "text_completion",
                                        "created": created,
                                        "model": settings.model_name,
                                        "choices": [],
                                        "usage": usage(result),
                                    }
                                )
                                + "\n\n"
                            )
                        metrics.observe_result(endpoint, result)
                        if settings.log_prompts:
                            log.info("%s completion: %r", rid, result.text)
                        break
                    event = await events.__anext__()
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:  # the client went away: router.stream's close cancels the work
                status = "499"
                log.info("%s %s: client disconnected mid-stream; request cancelled", rid, endpoint)
                raise
            except StopAsyncIteration:
                yield "data: [DONE]\n\n"
            except Exception as exc:  # headers are sent: report the error in the stream
                err = http_error(exc)
                status = str(err.status)
                if err.status >= 500 and not isinstance(exc, GlimpError):
                    log.error("%s %s failed mid-stream", rid, endpoint, exc_info=exc)
                yield f"data: {json.dumps(error_body(err.message, err.kind, err.code))}\n\n"
            finally:
                metrics.in_flight.dec()
                metrics.requests.labels(endpoint, status).inc()
                with contextlib.suppress(Exception):
                    await events.aclose()
                log.info("%s %s (stream) -> %s in %.3f s", rid, endpoint, status, time.perf_counter() - t0)

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handle(request, "chat", ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handle(request, "completions", CompletionRequest)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            check_key(request)
        except HTTPError as exc:
            return fail("models", exc, t0, "models")
        card = {
            "id": settings.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "glimp-llm",
            "glimp": {"small": mgr.small.info.model, "large": mgr.large.info.model},
        }
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/health")
    async def health() -> Response:
        try:
            state = await mgr.health()
        except Exception as exc:
            return JSONResponse({"ok": False, "detail": http_error(exc).message}, status_code=503)
        return JSONResponse(state, status_code=200 if state["ok"] else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            check_key(request)
        except HTTPError as exc:
            return fail("metrics", exc, t0, "metrics")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def run(config: GlimpConfig, settings: ServerSettings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (uvicorn, one process: the engines live in it)."""
    import uvicorn

    app = create_app(config, settings=settings)
    if on_ready is not None:
        on_ready(f"http://{settings.host}:{settings.port}")
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="info")
