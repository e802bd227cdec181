"""Duration strings: any value an API body can hold parses to finite, non-negative seconds or is refused with
ValueError (which pydantic turns into a 400); formatting then parsing gives the value back."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.schemas.durations import format_duration, parse_duration

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

#: What orjson can parse out of a request body (integers up to 64 bits, no NaN or Infinity).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN and infinity too: refused
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
#: Strings shaped like durations, valid or nearly so.
duration_like = st.builds(
    lambda sign, whole, fraction, unit, pad: f"{pad}{sign}{whole}{fraction}{unit}{pad}",
    st.sampled_from(["", "-", "+"]),
    st.integers(min_value=0, max_value=10**13).map(str) | st.sampled_from(["", "00", "01"]),
    st.sampled_from(["", "."]) | st.integers(min_value=0, max_value=10**10).map(lambda n: f".{n}"),
    st.sampled_from(["s", "S", "ms", "", "s s"]),
    st.sampled_from(["", " ", "\n"]),
)


@PROPERTY_SETTINGS
@given(value=json_values | duration_like)
def test_any_value_is_finite_non_negative_seconds_or_a_value_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0


@PROPERTY_SETTINGS
@given(seconds=st.floats(min_value=0, max_value=1e11, allow_nan=False))
def test_a_formatted_duration_parses_back_to_its_value(seconds: float) -> None:
    parsed = parse_duration(format_duration(seconds))
    assert parsed == pytest.approx(seconds, abs=1e-9, rel=1e-15)


# Below 2**22 s (48 days) a float still tells every nanosecond apart; beyond, durations lose nanoseconds.
@PROPERTY_SETTINGS
@given(
    whole=st.integers(min_value=0, max_value=2**22 - 1), nanos=st.integers(min_value=0, max_value=999_999_999)
)
def test_a_duration_string_formats_back_to_the_same_text_without_trailing_zeros(
    whole: int, nanos: int
) -> None:
    text = f"{whole}.{nanos:09d}".rstrip("0").rstrip(".") + "s"
    assert format_duration(parse_duration(text)) == text
