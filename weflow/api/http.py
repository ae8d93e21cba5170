"""HTTP edge of the API: strict JSON, the body size limit, and weflow errors as JSON responses."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from weflow.api.models import ErrorOut, Problem
from weflow.core.document import format_path, loads_json
from weflow.errors import CatalogError, ConflictError, DefinitionError, NotFoundError, ServerError, WeflowError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def parse_json(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, finite numbers, no lone surrogates; else JSONDecodeError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("not UTF-8", "", exc.start) from None
    try:
        data = loads_json(text, parse_constant=_no_constant, parse_float=_finite)  # refuses repeated keys
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # refuses lone surrogates (\ud800)
    except json.JSONDecodeError:
        raise
    except UnicodeEncodeError:
        raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate", text, 0) from None
    except (ValueError, RecursionError) as exc:
        raise json.JSONDecodeError(str(exc) or "nested too deeply", text, 0) from None
    return data


class StrictJSONRequest(Request):
    """A request whose JSON body is parsed strictly (NaN and 1e999 would be stored then break reads)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for inner in dependant.dependencies:
        names |= _query_names(inner)
    return names


class StrictJSONRoute(APIRoute):
    """Route class that hands endpoints a StrictJSONRequest and refuses unknown query parameters (typos)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        known = _query_names(self.dependant)

        async def strict(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                raise RequestValidationError(
                    [{"type": "extra_forbidden", "loc": ("query", name), "msg": "unknown query parameter"}
                     for name in unknown]
                )  # fmt: skip
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def error_response(
    status: int, detail: str, problems: Iterable[tuple[str, str]] = (), headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(detail=detail, problems=[Problem(path=p, message=m) for p, m in problems])
    return JSONResponse(body.model_dump(mode="json", by_alias=True), status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by Content-Length and while reading it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # raised inside request.body(): FastAPI lets HTTPException through
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"request body over the limit of {self.limit} bytes"

    def _too_large(self) -> JSONResponse:
        return error_response(413, self._detail(), headers={"Connection": "close"})


def _status_of(exc: WeflowError) -> int:
    if isinstance(exc, DefinitionError):
        return 422
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, CatalogError | ServerError):
        return 503
    return 400


async def weflow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WeflowError)
    problems = exc.problems if isinstance(exc, DefinitionError) else []
    return error_response(_status_of(exc), str(exc), problems)


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            problems.append(("body", f"invalid JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"))
            continue
        loc = [p for p in err.get("loc", ()) if isinstance(p, str | int)]
        msg = str(err.get("msg", "invalid"))
        problems.append((format_path(loc), msg[:1].lower() + msg[1:]))
    detail = "; ".join(f"{p}: {m}" for p, m in problems[:4]) or "invalid request"
    return error_response(422, detail, problems)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


HANDLERS: tuple[tuple[type[Exception], Callable[[Request, Exception], Coroutine[Any, Any, Response]]], ...] = (
    (WeflowError, weflow_error),
    (RequestValidationError, validation_error),
    (HTTPException, http_error),
)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: each error status with the ErrorOut body."""
    what = {
        400: "the request cannot be carried out",
        401: "missing, unknown or revoked API key",
        404: "no such workflow, version, execution or webhook in your organization",
        409: "conflicts with what is stored",
        413: "request body too large",
        422: "invalid request or definition; each problem has its path",
        503: "the catalog or the Prefect server is unavailable",
    }
    return {code: {"model": ErrorOut, "description": what[code]} for code in codes}
