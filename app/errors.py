"""Errors services raise; `app.api.errors` turns them into `{"detail", "code"}` responses."""

from __future__ import annotations


class ServiceError(Exception):
    """A failure the caller should hear about, with a stable machine-readable code."""

    status = 400

    def __init__(self, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status = 400


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409
