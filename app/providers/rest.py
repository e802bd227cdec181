"""Calling a provider's REST API: async, with timeouts, and retries that honour `Retry-After`.

Each provider's call-control client builds its requests; this module sends them. 429 is always retried
(every provider documents it as "not processed"). 5xx and timeouts are retried only for requests that are
safe to repeat: a call-creation request that timed out may have dialled, so it is not sent twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import httpx

log = logging.getLogger(__name__)

#: (error code, message) from a provider's error response.
ErrorParser = Callable[[httpx.Response], tuple[str | None, str]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one request."""

    attempts: int = 4
    first_delay_s: float = 0.5  # doubled after each failure, with jitter
    max_delay_s: float = 8.0  # a longer Retry-After is not waited for: the request fails instead
    timeout_s: float = 10.0


class ProviderApiError(Exception):
    """A provider's REST API refused a request or could not be reached."""

    def __init__(
        self,
        provider: str,
        action: str,
        status: int | None,
        code: str | None,
        message: str,
        retry_after_s: float | None = None,
        *,
        outcome_unknown: bool = False,
    ) -> None:
        where = f"HTTP {status}" if status is not None else "no answer"
        detail = f"{provider} {action} failed ({where}" + (f", code {code}" if code else "") + f"): {message}"
        super().__init__(detail)
        self.provider = provider
        self.action = action
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        #: A request that must not be repeated went out and got no answer, or a 5xx: whether the provider
        #: acted on it is unknown (a dial may have been placed).
        self.outcome_unknown = outcome_unknown

    @property
    def detail(self) -> str:
        return str(self)

    @property
    def temporary(self) -> bool:
        """Worth trying again later (rate limited, provider trouble, network, an unreadable answer), not a
        refusal of the request (4xx)."""
        return self.status is None or self.status == 429 or not 400 <= self.status < 500


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RequestBody(TypedDict, total=False):
    """What a request carries besides its method and path (`ProviderHttp.send`'s keywords)."""

    form: Mapping[str, Any] | None
    json: Mapping[str, Any] | None
    repeatable: bool


class ProviderHttp:
    """One provider account's REST endpoint: base URL, auth, error format, retry policy."""

    def __init__(
        self,
        provider: str,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        parse_error: ErrorParser,
        policy: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.provider = provider
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.headers = dict(headers or {})
        self.parse_error = parse_error
        self.policy = policy

    async def send(
        self,
        action: str,
        method: str,
        path: str,
        *,
        form: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        repeatable: bool = True,
    ) -> httpx.Response:
        """Send until a 2xx answer (returned) or a final failure (ProviderApiError).

        `repeatable=False` marks a request that must not be sent twice if it may have been processed
        (only 429 and connection failures before sending are retried then).
        """
        policy = self.policy
        url = self.base_url + path
        for attempt in range(1, policy.attempts + 1):
            wait: float | None
            try:
                response = await self.client.request(
                    method,
                    url,
                    data=dict(form) if form is not None else None,
                    json=dict(json) if json is not None else None,
                    auth=self.auth or httpx.USE_CLIENT_DEFAULT,
                    headers=self.headers,
                    timeout=policy.timeout_s,
                )
            except httpx.ConnectError as exc:  # nothing was sent: always safe to retry
                failure = ProviderApiError(self.provider, action, None, None, f"cannot connect: {exc}")
                wait = None
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                failure = ProviderApiError(
                    self.provider, action, None, None, detail, outcome_unknown=not repeatable
                )
                if not repeatable:
                    raise failure from None
                wait = None
            else:
                if response.is_success:
                    return response
                code, message = self.parse_error(response)
                wait = retry_after_seconds(response.headers.get("retry-after"))
                server_error = response.status_code >= 500
                failure = ProviderApiError(
                    self.provider,
                    action,
                    response.status_code,
                    code,
                    message,
                    wait,
                    outcome_unknown=server_error and not repeatable,
                )
                retryable = response.status_code == 429 or (server_error and repeatable)
                if not retryable:
                    raise failure
            if attempt == policy.attempts:
                raise failure
            delay = wait if wait is not None else _backoff(policy.first_delay_s, attempt)
            if delay > policy.max_delay_s:
                raise failure
            log.info("%s; retrying in %.1fs (attempt %d of %d)", failure, delay, attempt + 1, policy.attempts)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def send_for_object(
        self, action: str, method: str, path: str, **request: Unpack[RequestBody]
    ) -> dict[str, Any]:
        """`send`, and the answer's JSON object; an answer that is not one is a ProviderApiError (whose
        outcome is unknown for a request that must not be repeated: the provider took it, as what)."""
        response = await self.send(action, method, path, **request)
        body = json_body(response)
        if not isinstance(body, dict):
            what = "no JSON" if body is None else f"JSON {type(body).__name__}"
            raise ProviderApiError(
                self.provider,
                action,
                response.status_code,
                None,
                f"the answer is {what}, not the JSON object the API documents: {response.text[:200]!r}",
                outcome_unknown=not request.get("repeatable", True),
            )
        return body


def _backoff(first_delay_s: float, attempt: int) -> float:
    """Exponential back-off with ±25 % jitter, so many calls rate-limited at once do not retry in step."""
    return first_delay_s * 2 ** (attempt - 1) * random.uniform(0.75, 1.25)


def json_body(response: httpx.Response) -> Any:
    """The response's JSON body, or None when it has none."""
    try:
        return response.json()
    except ValueError:
        return None
