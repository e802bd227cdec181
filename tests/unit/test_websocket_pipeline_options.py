"""`callTemplate.pipeline.websocket` options: what is accepted, what is refused, and how it is stored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.media.formats import PCMU_8K, pcm16
from app.pipeline import build_pipeline
from app.pipeline.agent_link import shown_url
from app.pipeline.websocket import WebSocketOptions, handshake_signature
from app.schemas.media import validate_pipeline_spec


def test_defaults_are_native_framing_at_16khz_with_a_5s_connect_timeout() -> None:
    options = WebSocketOptions.model_validate({"url": "wss://agent.example/ws"})

    assert (options.framing, options.sample_rate, options.connect_timeout) == ("native", 16000, 5.0)


def test_native_pipeline_takes_pcm_at_the_sample_rate() -> None:
    pipeline = build_pipeline({"websocket": {"url": "wss://agent.example/ws", "sampleRate": 24000}})

    assert pipeline.accepted_formats == (pcm16(24000),)


def test_twilio_pipeline_takes_mulaw_8k() -> None:
    pipeline = build_pipeline({"websocket": {"url": "wss://agent.example/ws", "framing": "twilio"}})

    assert pipeline.accepted_formats == (PCMU_8K,)


def test_spec_is_stored_camel_case_without_defaults() -> None:
    spec = {"websocket": {"url": "ws://agent:8080/ws", "connectTimeout": 2, "secret": "s"}}

    assert validate_pipeline_spec(spec) == {
        "websocket": {"url": "ws://agent:8080/ws", "connectTimeout": "2s", "secret": "s"}
    }


@pytest.mark.parametrize(
    "options",
    [
        {"url": "https://agent.example/ws"},
        {"url": "ws:///no-host"},
        {"url": "wss://agent.example/ws", "framing": "grpc"},
        {"url": "wss://agent.example/ws", "sampleRate": 22050},
        {"url": "wss://agent.example/ws", "framing": "twilio", "sampleRate": 8000},
        {"url": "wss://agent.example/ws", "connectTimeout": "0s"},
        {"url": "wss://agent.example/ws", "headers": {"X-Callbridge-Signature": "forged"}},
        {"url": "wss://agent.example/ws", "headers": {"Sec-WebSocket-Key": "x"}},
        {"url": "wss://agent.example/ws", "headers": {"Host": "elsewhere"}},
        {"url": "wss://agent.example/ws", "headers": {"Bad Name": "x"}},
        {"url": "wss://agent.example/ws", "headers": {"X-Token": "a\r\nX-Injected: 1"}},
        {"url": "wss://agent.example/ws", "retries": 3},
    ],
    ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items() if k != "url") or options["url"],
)
def test_invalid_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WebSocketOptions.model_validate(options)


def test_signature_is_hex_hmac_sha256_of_timestamp_dot_call_id() -> None:
    # printf '1700000000.call-1' | openssl dgst -sha256 -hmac s3cret
    assert handshake_signature("s3cret", 1700000000, "call-1") == (
        "0d71ed644409a23298874bd70fceeb5e9a663cd641bb7a29c87ab2d952c39ba8"
    )


def test_shown_url_drops_credentials_query_and_fragment() -> None:
    assert shown_url("wss://user:pw@agent.example:8443/ws?token=abc#x") == "wss://agent.example:8443/ws"
