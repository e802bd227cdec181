"""pipeline secrets at rest: seal the plaintext ones in agents' templates and calls' definitions

The stored format is frozen here (not imported from app.pipeline, which may change): in a pipeline spec
`{backend: options}`, the options `apiKey` and `secret` and every value of `headers` become
`{"sealed": <SecretBox token>, "prefix": <first 4 characters>}`, the token bound to the context
`pipeline/<owner>/<backend>/<place>`, the owner being `agent/<agentId>` for agents' templates and calls
made from an agent (which carry their agent's secrets), `call/<callId>` for calls made without one.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from alembic import context, op
from app.store.secret_box import MASTER_SECRET_ATTRIBUTE, SecretBox

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SECRET_OPTIONS = ("apiKey", "secret")
HEADERS_OPTION = "headers"
PREFIX_LENGTH = 4
BATCH = 500

Json = sa.JSON().with_variant(JSONB(), "postgresql")
agents = sa.table(
    "agents", sa.column("seq", sa.Integer), sa.column("id", sa.String), sa.column("call_template", Json)
)
calls = sa.table(
    "calls",
    sa.column("seq", sa.Integer),
    sa.column("id", sa.String),
    sa.column("agent_id", sa.String),
    sa.column("definition", Json),
)

#: (place in the spec, value) → the value to store instead.
Transform = Callable[[str, Any], Any]
#: The SecretBox, made when the first secret needs it (a database without secrets needs no key).
BoxSource = Callable[[], SecretBox]


def upgrade() -> None:
    _rewrite_pipelines(_seal)


def downgrade() -> None:
    _rewrite_pipelines(_open)


def _seal(box: BoxSource, owner: str) -> Transform:
    def seal_one(place: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        token = box().encrypt(value, f"pipeline/{owner}/{place}")
        return {"sealed": token, "prefix": value[:PREFIX_LENGTH]}

    return seal_one


def _open(box: BoxSource, owner: str) -> Transform:
    def open_one(place: str, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return box().decrypt(value["sealed"], f"pipeline/{owner}/{place}")

    return open_one


def _rewrite_pipelines(transform: Callable[[BoxSource, str], Transform]) -> None:
    """Store every pipeline spec of agents and calls with its secrets passed through `transform`."""
    box = functools.cache(_secret_box)

    def rewritten(document: dict[str, Any] | None, owner: str) -> dict[str, Any] | None:
        spec = (document or {}).get("pipeline")
        if not isinstance(spec, dict):
            return None
        new_spec = _map_secrets(spec, transform(box, owner))
        return None if new_spec == spec else {**(document or {}), "pipeline": new_spec}

    for row in _every_row(sa.select(agents.c.seq, agents.c.id, agents.c.call_template), agents.c.seq):
        if (template := rewritten(row.call_template, f"agent/{row.id}")) is not None:
            op.execute(agents.update().where(agents.c.seq == row.seq).values(call_template=template))
    query = sa.select(calls.c.seq, calls.c.id, calls.c.agent_id, calls.c.definition)
    for row in _every_row(query, calls.c.seq):
        owner = f"agent/{row.agent_id}" if row.agent_id else f"call/{row.id}"
        if (definition := rewritten(row.definition, owner)) is not None:
            op.execute(calls.update().where(calls.c.seq == row.seq).values(definition=definition))


def _every_row(query: sa.Select[Any], seq: sa.ColumnClause[Any]) -> Iterator[sa.Row[Any]]:
    """The query's rows, read in batches of BATCH in `seq` order."""
    last = 0
    while batch := op.get_bind().execute(query.where(seq > last).order_by(seq).limit(BATCH)).all():
        yield from batch
        last = batch[-1].seq


def _map_secrets(spec: dict[str, Any], transform: Transform) -> dict[str, Any]:
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


def _secret_box() -> SecretBox:
    master = context.config.attributes.get(MASTER_SECRET_ATTRIBUTE)
    if not master:
        raise RuntimeError(
            "stored pipeline secrets must be sealed with CALLBRIDGE_SECRET_KEY: "
            "migrate with `callbridge migrate` or `callbridge serve`"
        )
    return SecretBox(master)
