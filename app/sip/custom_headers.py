"""Headers a user may add to callbridge's requests (an outgoing call's INVITE, a transfer's REFER or INVITE).

A name must be a SIP token and not one callbridge writes itself (Via, Call-ID, CSeq...: setting those would
break the transaction or the dialog); a value is one line. Checked before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Headers callbridge writes itself on every request.
MANAGED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Type", "Content-Length",
        "Route", "Record-Route", "Authorization", "Proxy-Authorization", "Allow", "Session-Expires", "Min-SE",
    )
)  # fmt: skip
#: Also written by a REFER (RFC 3515, RFC 3892).
REFER_HEADERS = frozenset({"refer-to", "referred-by", "event", "refer-sub"})
MAX_CUSTOM_HEADERS = 20
MAX_VALUE_LENGTH = 1024
# RFC 3261 §25.1 token characters; 64 is callbridge's own cap.
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]{1,64}$")


def check_custom_headers(
    headers: Mapping[str, str], field: str, also_managed: Iterable[str] = ()
) -> dict[str, str]:
    """`headers` as given when each may be sent; ValueError naming `field` and the bad header otherwise."""
    managed = MANAGED_HEADERS | {name.lower() for name in also_managed}
    if len(headers) > MAX_CUSTOM_HEADERS:
        raise ValueError(f"{field}: at most {MAX_CUSTOM_HEADERS} headers")
    for name, value in headers.items():
        if not _TOKEN.match(name) or name.lower() in managed or len(name) == 1:
            # One-letter names are compact forms of managed headers (v: Via, i: Call-ID...).
            raise ValueError(f"{field}: {name!r} cannot be set (a header name callbridge does not write)")
        if "\r" in value or "\n" in value or "\0" in value or len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"{field}.{name}: one line of at most {MAX_VALUE_LENGTH} characters")
    return dict(headers)
