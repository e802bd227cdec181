"""Protobuf-style duration strings (`"30s"`, `"0.384s"`), as the Ultravox API uses them."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^-?(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,9})?s$")


def parse_duration(value: Any) -> float:
    """Seconds from `"12.5s"` (numbers are taken as seconds too)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like '30s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        seconds = float(value.strip()[:-1])
    else:
        raise ValueError(f"invalid duration {value!r}: expected a string like '30s' or '0.5s'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """`"30s"`, `"0.5s"`, `"0.384s"`: at most nine decimals, no trailing zeros."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _DURATION.pattern, "examples": ["30s", "0.5s"]}),
]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
