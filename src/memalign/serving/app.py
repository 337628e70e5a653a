"""The HTTP face of an :class:`~memalign.serving.engine.Engine`: OpenAI's chat-completion API on FastAPI.

Every error a client can cause is answered with OpenAI's error object and a 4xx status (400 bad field,
401 no/unknown key, 403 persona not allowed, 404 unknown model or conversation, 409 conversation busy
or diverging, 413 body too large). Anything else is logged with its traceback and answered 500 with a
one-line message: no traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from openai.types.model import Model
from starlette.exceptions import HTTPException as StarletteHTTPException

from memalign.errors import MemalignError, NotFoundError, RequestError
from memalign.serving.access import ApiKeys
from memalign.serving.engine import Engine, Generation, GenerationRequest
from memalign.serving.protocol import chunk, completion_response, error_body, parse_body

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
}


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, kind, param, code), status_code=status)


def create_app(
    engine: Engine, api_keys: ApiKeys | None = None, *, max_body_bytes: int = 4 << 20, default_max_tokens: int = 256
) -> FastAPI:
    """A FastAPI app serving ``engine`` (which the caller starts and closes)."""
    app = FastAPI(title="memalign", docs_url=None, redoc_url=None, openapi_url=None)
    served = engine.model_name

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.param, exc.code)

    @app.exception_handler(MemalignError)
    async def _memalign_error(request: Request, exc: MemalignError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"])
        return _error(400, f"{param}: {first['msg']}" if param else first["msg"], param or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    def caller(request: Request) -> tuple[str | None, tuple[str, ...] | None]:
        """The API key and the personas it may use (None, None when the server has no keys)."""
        if api_keys is None:
            return None, None
        return api_keys.authenticate(request.headers.get("authorization"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return engine.health()

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _, allowed = caller(request)
        names = [served] + [
            f"{served}:{p}" for p in engine.personas.names if allowed is None or "*" in allowed or p in allowed
        ]
        data = [Model(id=name, created=0, object="model", owned_by="memalign").model_dump() for name in names]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        key, allowed = caller(request)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"the request body is over this server's limit of {max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return _error(413, f"the request body is over this server's limit of {max_body_bytes} bytes")
        body = parse_body(raw)
        persona = _persona(body.model, body.persona, served)
        engine.check_persona(persona, allowed)
        job = engine.submit(
            GenerationRequest(
                body.chat_messages(), body.sampling(default_max_tokens), persona, body.conversation_id, key
            )
        )
        if not body.stream:
            try:
                done = await job.aresult()
            except asyncio.CancelledError:
                job.cancel()
                raise
            return completion_response(done, body.model)
        first = await job.first_event()  # a failed prefill still gets a proper status, not a broken stream
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            _events(job, first, body.model, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.get("/v1/conversations/{conversation_id}")
    async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        key, _ = caller(request)
        return engine.conversation(conversation_id, key)

    @app.delete("/v1/conversations/{conversation_id}")
    async def delete_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
        key, _ = caller(request)
        engine.delete_conversation(conversation_id, key)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    return app


def _persona(model: str, persona: str | None, served: str) -> str | None:
    """The persona a request asks for: ``persona`` or the ``M:NAME`` form of ``model`` (both must agree)."""
    if model == served:
        return persona
    if model.startswith(f"{served}:"):
        named = model[len(served) + 1 :]
        if persona is not None and persona != named:
            raise RequestError(f"model names persona {named!r} but persona is {persona!r}; send one", "persona")
        return named
    raise NotFoundError(
        f"model {model!r} is not served here; this server serves {served!r} (optionally "
        f"{served!r}:PERSONA, see GET /v1/models)",
        "model",
    )


async def _events(job: Generation, first: str | None, model: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of one streamed answer; an error after the stream started is sent as an event."""
    yield chunk(job.id, job.created, model, role=True, content="")
    try:
        if first:
            yield chunk(job.id, job.created, model, content=first)
        async for delta in job:
            yield chunk(job.id, job.created, model, content=delta)
    except MemalignError as exc:
        status = exc.status if isinstance(exc, RequestError) else 400
        payload = error_body(str(exc), _ERROR_TYPES.get(status, "invalid_request_error"))
        yield f"data: {json.dumps(payload)}\n\n"
        return
    except (asyncio.CancelledError, GeneratorExit):
        job.cancel()  # the client went away
        raise
    done = job.completion
    yield chunk(job.id, job.created, model, finish_reason=done.finish_reason)
    if include_usage:
        yield chunk(job.id, job.created, model, usage=done)
    yield "data: [DONE]\n\n"
