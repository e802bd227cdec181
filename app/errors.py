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


class CallNotActive(ServiceError):
    """The call is not live (not joined yet, or ended): 422."""

    status = 422


class RetryLater(ServiceError):
    """A refusal that ends: the response says when to try again (`Retry-After`)."""

    def __init__(self, code: str, detail: str, *, retry_after_s: int) -> None:
        super().__init__(code, detail, headers={"Retry-After": str(retry_after_s)})


class TooManyRequests(RetryLater):
    """Over a limit: 429 with `Retry-After`."""

    status = 429


class Unavailable(RetryLater):
    """The service cannot take this now (it is draining): 503 with `Retry-After`."""

    status = 503


class ControlTimedOut(ServiceError):
    """The instance holding a call did not answer a control request in time: 504."""

    status = 504


class ProviderFailed(ServiceError):
    """The telephony provider refused or could not take a request (its answer is in `detail`)."""

    status = 502


class ProviderOutcomeUnknown(ProviderFailed):
    """A request that must not be repeated (a dial) went out and got no answer or a 5xx: the provider may
    or may not have acted on it. A scheduled call's dial is then settled from the provider's call list."""
