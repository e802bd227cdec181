"""Per-call callbacks at rest: their secrets are sealed like pipeline secrets (same owner, own place).

A template's callbacks are sealed for its agent; a call's for its owner (`call_owner`: the agent's, or the
call's own), so a call made from an agent carries its template's sealed values as they are.
"""

from __future__ import annotations

from typing import Any

from app.pipeline.secret_options import SealedSecret, shown_prefix
from app.store.secret_box import SecretBox


def _context(owner: str, kind: str, index: int) -> str:
    return f"callbacks/{owner}/{kind}/secrets/{index}"


def plaintext_callback_secrets(callbacks: dict[str, Any] | None) -> bool:
    """Whether any callback secret is still a plain string."""
    return any(
        isinstance(secret, str)
        for callback in (callbacks or {}).values()
        if callback
        for secret in callback.get("secrets", [])
    )


def seal_callbacks(box: SecretBox, callbacks: dict[str, Any] | None, owner: str) -> dict[str, Any] | None:
    """The callbacks as stored: every plaintext secret sealed (sealed ones stay as they are)."""
    if callbacks is None:
        return None
    sealed: dict[str, Any] = {}
    for kind, callback in callbacks.items():
        if callback is None:
            continue
        secrets = [
            SealedSecret(
                sealed=box.encrypt(secret, _context(owner, kind, n)), prefix=shown_prefix(secret)
            ).model_dump()
            if isinstance(secret, str)
            else secret
            for n, secret in enumerate(callback.get("secrets", []))
        ]
        sealed[kind] = {**callback, "secrets": secrets}
    return sealed


def open_callback_secrets(box: SecretBox, callback: dict[str, Any], owner: str, kind: str) -> list[str]:
    """A stored callback's secrets in plaintext (SecretDecryptionError with another secret key)."""
    return [
        box.decrypt(SealedSecret.model_validate(secret).sealed, _context(owner, kind, n))
        for n, secret in enumerate(callback.get("secrets", []))
    ]


def merged_callbacks(
    template: dict[str, Any] | None, request: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A call's callbacks: its template's, each kind the request gives replaced by the request's."""
    if template is None and request is None:
        return None
    merged = {**(template or {}), **{k: v for k, v in (request or {}).items() if v is not None}}
    return {kind: callback for kind, callback in merged.items() if callback is not None}
