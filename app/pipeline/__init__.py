"""Agent pipelines: the interface and its backends, chosen by `callTemplate.pipeline`.

Stored specs hold their secrets sealed (app/pipeline/secret_options.py): build pipelines from opened ones.
"""

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


def build_pipeline(spec: dict[str, Any]) -> Pipeline:
    """A new pipeline for one call from a one-key spec such as `{"echo": {"delay": "1s"}}` ."""
    ((name, options),) = spec.items()
    options_model, factory = BACKENDS[name]
    return factory(options_model.model_validate(options or {}))
