"""Agent pipelines: the interface and its backends, chosen by `callTemplate.pipeline`."""

from __future__ import annotations

from typing import Any

from app.pipeline.base import Pipeline
from app.pipeline.echo import EchoOptions, EchoPipeline
from app.pipeline.openai_realtime import OpenAIRealtimeOptions, OpenAIRealtimePipeline
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline

#: Backend name → (options model, factory).
BACKENDS: dict[str, tuple[type[Any], Any]] = {
    "echo": (EchoOptions, EchoPipeline),
    "websocket": (WebSocketOptions, WebSocketPipeline),
    "openaiRealtime": (OpenAIRealtimeOptions, OpenAIRealtimePipeline),
}


#: Option names whose values are secrets: write-only, shown in responses only as `<name>Prefix`.
SECRET_OPTIONS = ("apiKey", "secret")
SECRET_PREFIX_LENGTH = 4


def public_pipeline_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as API responses show it: secrets (and handshake header values) cut to a short prefix."""
    public: dict[str, Any] = {}
    for name, options in spec.items():
        shown = dict(options or {})
        for key in SECRET_OPTIONS:
            if isinstance(shown.get(key), str):
                shown[f"{key}Prefix"] = shown.pop(key)[:SECRET_PREFIX_LENGTH]
        if isinstance(shown.get("headers"), dict):
            shown["headers"] = {h: str(v)[:SECRET_PREFIX_LENGTH] + "…" for h, v in shown["headers"].items()}
        public[name] = shown
    return public


def build_pipeline(spec: dict[str, Any]) -> Pipeline:
    """A new pipeline for one call from a one-key spec such as `{"echo": {"delay": "1s"}}`."""
    ((name, options),) = spec.items()
    options_model, factory = BACKENDS[name]
    return factory(options_model.model_validate(options or {}))
