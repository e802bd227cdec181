"""Reading a provider's list of calls to settle a dial whose outcome a crash left unknown.

Twilio's `Calls.json` and Telnyx's TeXML `Calls` answer the same paged shape: `{"calls": [...],
"next_page_uri": ...}`, newest first, each call with `sid`, `to`, `from` and `date_created`. `dials_since`
pages through such a list and keeps the calls created at or after a moment.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from app.providers.rest import ProviderApiError, ProviderHttp

#: Pages read at most for one lookup (newest first: the dial looked for is on the first ones).
MAX_PAGES = 20
PAGE_SIZE = 50


def provider_time(value: Any) -> datetime | None:
    """A provider's timestamp: RFC 2822 (`Tue, 10 Aug 2010 08:02:17 +0000`) or ISO 8601; None if neither."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def dials_since(
    http: ProviderHttp, path: str, filters: Mapping[str, str], since: datetime, action: str = "list calls"
) -> list[str]:
    """The sids of the listed calls (`path` with `filters`) created at or after `since`, newest first.

    A call without a readable `date_created` counts (it may be the dial looked for). ProviderApiError when
    the provider cannot answer or its answer is not such a list.
    """
    query = urlencode({**filters, "PageSize": str(PAGE_SIZE)})
    target: str | None = f"{path}?{query}"
    found: list[str] = []
    for _ in range(MAX_PAGES):
        if target is None:
            return found
        page = await http.send_for_object(action, "GET", target)
        calls = page.get("calls")
        if not isinstance(calls, list):
            raise ProviderApiError(http.provider, action, 200, None, "the answer has no `calls` list")
        older = False
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("sid"), str):
                raise ProviderApiError(
                    http.provider, action, 200, None, f"a listed call has no sid: {call!r}"
                )
            created = provider_time(call.get("date_created"))
            if created is not None and created < since:
                older = True
                continue
            found.append(call["sid"])
        next_page = page.get("next_page_uri")
        target = next_page if isinstance(next_page, str) and next_page and not older else None
    raise ProviderApiError(http.provider, action, 200, None, f"more than {MAX_PAGES} pages of calls")
