"""Errors as the API answers them: `ServiceError`, the base of every domain error, and the one
handler that turns any of them into a `Problem` response; request validation errors are answered
without echoing their input.

A domain module raises a subclass naming its HTTP `status` and machine `code`; routes do not
catch it. The handler answers `{"detail": message, "code": code}` (no `code` when it is None) with
the error's `status` and `headers()`; a subclass adds fields by overriding `body()`. An error with
`keep_changes` (a failed password, which is audited) has the request's session commit what was
written before it (`service.core.deps.get_session`); any other error rolls back.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Problem(BaseModel):
    """An error: a machine code and a message a person can act on."""

    detail: str
    code: str | None = None


class ServiceError(Exception):
    """A request that cannot be done as asked: HTTP status, machine code, and a message a
    radiologist or an IT person can act on (it never carries patient data or secrets)."""

    status: int = 400
    code: str | None = None
    keep_changes: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        if self.code is None:
            return {"detail": self.message}
        return {"detail": self.message, "code": self.code}

    def headers(self) -> dict[str, str]:
        """Headers of the answer (none by default)."""
        return {}


async def answer(_: Request, error: Exception) -> JSONResponse:
    """The response to a ServiceError raised anywhere in a request."""
    assert isinstance(error, ServiceError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers() or None)


async def invalid_request(_: Request, error: Exception) -> JSONResponse:
    """The 422 of a request that fails validation: where and what, never the `input` or `ctx`
    FastAPI would echo (a password, report text)."""
    assert isinstance(error, RequestValidationError)
    details = [{"loc": list(item.get("loc", ())), "msg": item.get("msg", ""),
                "type": item.get("type", "")} for item in error.errors()]
    return JSONResponse({"detail": details, "code": "invalid_request"}, status_code=422)


def install(app: FastAPI) -> None:
    """Answer every ServiceError of `app` with `answer`, and validation errors with
    `invalid_request`."""
    app.add_exception_handler(ServiceError, answer)
    app.add_exception_handler(RequestValidationError, invalid_request)
