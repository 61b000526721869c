"""Errors as the API answers them: the `Problem` body every error response has."""

from __future__ import annotations

from pydantic import BaseModel


class Problem(BaseModel):
    """An error: a machine code and a message a person can act on."""

    detail: str
    code: str | None = None
