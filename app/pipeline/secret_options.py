"""Pipeline secrets at rest: sealed with the SecretBox when stored, opened only to build a live call's agent.

A spec's secrets are its `apiKey` and `secret` options and every handshake header value. The API takes them
as strings; stored, each is a `SealedSecret`: the ciphertext, bound to its owner (the agent whose template
holds it, or the call made without an agent) and its place in the spec, plus the prefix responses show.
A call made from an agent carries its agent's sealed values, so creating it decrypts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.store.secret_box import SecretBox

#: Option names whose values are secrets: write-only, shown in responses only as `<name>Prefix`.
SECRET_OPTIONS = ("apiKey", "secret")
#: The option whose values (handshake headers such as Authorization) are secrets too.
HEADERS_OPTION = "headers"
SECRET_PREFIX_LENGTH = 4


class SealedSecret(BaseModel):
    """A secret option as stored: its SecretBox token and the prefix responses show."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sealed: str
    prefix: str


#: An option holding a secret: a string as given to the API, sealed as stored.
PipelineSecret = str | SealedSecret


class SealedSecretError(Exception):
    """A pipeline got a secret that is still sealed (its spec was not opened before building it)."""


def revealed(value: PipelineSecret) -> str:
    """The secret's plaintext, in a pipeline built from an opened spec."""
    if isinstance(value, SealedSecret):
        raise SealedSecretError("pipeline secrets must be opened (PipelineSecrets.open) before building")
    return value


def map_secrets(spec: dict[str, Any], transform: Callable[[str, Any], Any]) -> dict[str, Any]:
    """A copy of the spec (JSON) with every secret value replaced by `transform(place, value)`.

    `place` names the value within the spec: `websocket/secret`, `websocket/headers/Authorization`.
    """
    mapped: dict[str, Any] = {}
    for backend, given in spec.items():
        options = dict(given or {})
        for name in SECRET_OPTIONS:
            if options.get(name) is not None:
                options[name] = transform(f"{backend}/{name}", options[name])
        if isinstance(options.get(HEADERS_OPTION), dict):
            options[HEADERS_OPTION] = {
                header: transform(f"{backend}/{HEADERS_OPTION}/{header}", value)
                for header, value in options[HEADERS_OPTION].items()
            }
        mapped[backend] = options
    return mapped


def shown_prefix(value: Any) -> str:
    """What a response shows of a secret value, given (a string) or stored (sealed)."""
    if isinstance(value, dict):
        return str(SealedSecret.model_validate(value).prefix)
    return str(value)[:SECRET_PREFIX_LENGTH]


def public_pipeline_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as API responses show it: secrets (and handshake header values) cut to a short prefix."""
    public = map_secrets(spec, lambda _place, value: shown_prefix(value))
    for options in public.values():
        for name in SECRET_OPTIONS:
            if name in options:
                options[f"{name}Prefix"] = options.pop(name)
        if isinstance(options.get(HEADERS_OPTION), dict):
            options[HEADERS_OPTION] = {h: prefix + "…" for h, prefix in options[HEADERS_OPTION].items()}
    return public


def agent_owner(agent_id: str) -> str:
    """The owner of the secrets in an agent's call template."""
    return f"agent/{agent_id}"


def call_owner(call_id: str, agent_id: str | None) -> str:
    """The owner of the secrets a call's pipeline carries: its agent's, or (no agent) the call's own."""
    return agent_owner(agent_id) if agent_id else f"call/{call_id}"


class PipelineSecrets:
    """Seals and opens the secrets of pipeline specs with the SecretBox (bound to owner and place)."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def seal(self, spec: dict[str, Any], owner: str) -> dict[str, Any]:
        """The spec as stored: every plaintext secret sealed (values already sealed stay as they are)."""

        def seal_one(place: str, value: Any) -> Any:
            if not isinstance(value, str):
                return value
            sealed = self.box.encrypt(value, _context(owner, place))
            return SealedSecret(sealed=sealed, prefix=shown_prefix(value)).model_dump()

        return map_secrets(spec, seal_one)

    def open(self, spec: dict[str, Any], owner: str) -> dict[str, Any]:
        """The spec with its secrets decrypted, to build a live call's pipeline (or SecretDecryptionError)."""

        def open_one(place: str, value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return self.box.decrypt(SealedSecret.model_validate(value).sealed, _context(owner, place))

        return map_secrets(spec, open_one)


def plaintext_places(spec: dict[str, Any]) -> list[str]:
    """Where the spec holds a secret not sealed yet."""
    places: list[str] = []

    def note(place: str, value: Any) -> Any:
        if isinstance(value, str):
            places.append(place)
        return value

    map_secrets(spec, note)
    return places


def _context(owner: str, place: str) -> str:
    return f"pipeline/{owner}/{place}"
