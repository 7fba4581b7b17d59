"""Every error the server answers, in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, so the
`openai` SDK shows the reason (a FastAPI default `{"detail": ...}` would reach its users as an unknown error)."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("inference.server")

ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
               503: "server_busy"}


class ApiError(Exception):
    """An error answered in OpenAI's shape, before any audio was sent."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ClientGone(Exception):
    """The client left before its answer was ready; its work is cancelled and nothing is sent."""


def validation_error(e: ValidationError | RequestValidationError) -> ApiError:
    """A 400 naming the first bad field as `param` and every problem in the message."""
    first = e.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
    message = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'request'}: {err['msg']}"
                        for err in e.errors())
    return ApiError(400, message, param, "invalid_value")


async def _api_error(_: Request, e: ApiError) -> JSONResponse:
    return e.response()


async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    return validation_error(e).response()


async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
    return ApiError(e.status_code, str(e.detail)).response()


async def _gone(_: Request, __: ClientGone) -> Response:
    return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the access log shows it


async def _crashed(_: Request, e: Exception) -> JSONResponse:
    log.exception("request failed")
    return ApiError(500, f"the server failed on this request ({type(e).__name__})").response()


def add_error_handlers(app: FastAPI) -> None:
    """Answer our errors, FastAPI's own (validation, 404, 405) and crashes in OpenAI's shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ClientGone, _gone)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crashed)
