"""Public schema rules: durations, media, first speaker, pipelines, metadata."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.calls.service import billed_seconds
from app.schemas.agents import CallTemplate
from app.schemas.calls import StartAgentCallRequest
from app.schemas.durations import format_duration, parse_duration
from app.schemas.media import Medium


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("0.384s", 0.384), ("3600s", 3600.0), (2, 2.0)])
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "1m", "-1s", "abc", True, "1.0000000001s"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(30.0, "30s"), (0.5, "0.5s"), (0.384, "0.384s"), (0.0, "0s")])
def test_durations_format_like_protobuf(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_template_defaults_follow_ultravox() -> None:
    template = CallTemplate().to_json()
    assert template["joinTimeout"] == "30s"
    assert template["maxDuration"] == "3600s"
    assert template["firstSpeakerSettings"] == {"agent": {"uninterruptible": False}}
    assert template["pipeline"] == {"echo": {}}


def test_medium_needs_exactly_one_variant() -> None:
    assert Medium.model_validate({"twilio": {}}).kind == "twilio"
    assert Medium.model_validate({"serverWebSocket": {"inputSampleRate": 16000}}).kind == "serverWebSocket"
    for bad in ({}, {"twilio": {}, "telnyx": {}}):
        with pytest.raises(ValidationError, match="exactly one"):
            Medium.model_validate(bad)


def test_first_speaker_needs_exactly_one_of_agent_or_user() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        CallTemplate.model_validate({"firstSpeakerSettings": {"agent": {}, "user": {}}})


def test_unknown_pipeline_and_bad_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown pipeline"):
        CallTemplate.model_validate({"pipeline": {"nope": {}}})
    with pytest.raises(ValidationError, match="extra"):
        CallTemplate.model_validate({"pipeline": {"echo": {"volume": 3}}})
    assert CallTemplate.model_validate({"pipeline": {"echo": {"delay": "1s"}}}).pipeline == {
        "echo": {"delay": "1s"}
    }


def test_invalid_context_schema_is_refused() -> None:
    with pytest.raises(ValidationError, match="not a valid JSON Schema"):
        CallTemplate.model_validate({"contextSchema": {"type": "not-a-type"}})


def test_reserved_metadata_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        StartAgentCallRequest.model_validate({"metadata": {"callbridge.x": "1"}})


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        CallTemplate.model_validate({"sytemPrompt": "typo"})


def test_billing_rounds_up_to_the_next_deciminute() -> None:
    from datetime import UTC, datetime, timedelta

    joined = datetime(2026, 1, 1, tzinfo=UTC)
    assert billed_seconds(joined, joined + timedelta(seconds=0.2)) == 6.0
    assert billed_seconds(joined, joined + timedelta(seconds=6)) == 6.0
    assert billed_seconds(joined, joined + timedelta(seconds=6.1)) == 12.0
    assert billed_seconds(None, joined) == 0.0
    assert billed_seconds(joined, None) == 0.0


def test_zero_or_negative_timeouts_are_refused_for_templates_and_calls() -> None:
    with pytest.raises(ValidationError, match="longer than 0s"):
        CallTemplate.model_validate({"maxDuration": "0s"})
    with pytest.raises(ValidationError, match="longer than 0s"):
        StartAgentCallRequest.model_validate({"joinTimeout": "0s"})
