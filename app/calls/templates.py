"""Template context: mustache `{{a.b}}` rendering, JSON Schema validation and provider field mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from app.errors import InvalidInput

# `{{ a.b }}` and the triple-mustache `{{{ a.b }}}` (both render raw: prompts are not HTML).
_VARIABLE = re.compile(r"\{\{(\{)?\s*([A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?(1)\})\}\}")
_MISSING = object()


def get_path(source: Any, dotted: str) -> Any:
    """`source["a"]["b"]` for `"a.b"`, or a sentinel when any step is missing."""
    value = source
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    """`target["a"]["b"] = value` for `"a.b"`, creating the objects on the way."""
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _as_text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""  # an allowed-but-missing variable renders empty
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def render(template: str, context: Mapping[str, Any]) -> str:
    """Fill `{{a.b}}` variables from `context`."""
    return _VARIABLE.sub(lambda m: _as_text(get_path(context, m.group(2))), template)


def validate_context(context: dict[str, Any], schema: dict[str, Any] | None) -> None:
    """Raise InvalidInput naming the failing path when `context` does not match `schema`."""
    if schema is None:
        return
    error = best_match(Draft202012Validator(schema).iter_errors(context))
    if error is None:
        return
    path = ".".join(str(p) for p in error.absolute_path)
    where = f"templateContext.{path}" if path else "templateContext"
    raise InvalidInput("invalid_template_context", f"{where}: {error.message}")


def map_request_context(fields: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Apply `requestContextMapping` (`{"From": "user.phone_number"}`) to a provider request's fields."""
    context: dict[str, Any] = {}
    for source_path, target_path in mapping.items():
        value = fields.get(source_path, _MISSING)
        if value is _MISSING:
            value = get_path(fields, source_path)
        if value is not _MISSING:
            set_path(context, target_path, value)
    return context


def merge_context(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base` (extra wins)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_context(merged[key], value)
        else:
            merged[key] = value
    return merged
