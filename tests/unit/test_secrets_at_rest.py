"""Pipeline secrets and provider credentials at rest: sealed in the database, opened only for a live call.

The database is read directly (sqlite3 on the app's file), as someone holding a copy of it would.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.pipeline.openai_realtime import OpenAIRealtimeOptions
from app.pipeline.secret_options import PipelineSecrets, SealedSecretError, agent_owner, revealed
from app.pipeline.websocket import WebSocketOptions, WebSocketPipeline
from app.schemas.call_definition import CallDefinition
from app.schemas.telephony import TelnyxConfig, TwilioConfig
from app.services import Services
from app.settings import Settings
from app.store.db import Database
from app.store.repositories import AgentRepository, CallRepository
from app.store.secret_box import SecretBox, SecretDecryptionError
from app.store.tables import AgentRow, CallRow, utcnow

SECRET = "s3cr3t-handshake-value"
BEARER = "Bearer agent-token-0123456789"
API_KEY = "sk-live-abcdefghijklmnop"
WEBSOCKET = {
    "websocket": {"url": "ws://127.0.0.1:9/agent", "secret": SECRET, "headers": {"Authorization": BEARER}}
}
REALTIME = {"openaiRealtime": {"url": "wss://rt.example.com/v1/realtime", "apiKey": API_KEY}}
PLAINTEXTS = (SECRET, BEARER, API_KEY)


def stored(settings: Settings, query: str) -> list[str]:
    """Rows of `query` on the app's SQLite file, each as the JSON text the database holds."""
    path = settings.resolved_database_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute(query)]


def assert_sealed(documents: list[str]) -> None:
    assert documents
    for document in documents:
        assert not any(secret in document for secret in PLAINTEXTS), document
        assert '"sealed"' in document


def services(client: TestClient) -> Services:
    return client.app.state.services  # type: ignore[attr-defined,no-any-return]


def live_pipeline(client: TestClient, call_id: str) -> Any:
    """The pipeline the app builds when the call's stream joins."""

    async def build() -> Any:
        row = await services(client).calls_repo.get(call_id)
        assert row is not None
        return services(client).build_pipeline(row)

    return client.portal.call(build)  # type: ignore[union-attr]


def create_agent(client: TestClient, pipeline: dict[str, Any]) -> str:
    response = client.post("/api/agents", json={"name": "a", "callTemplate": {"pipeline": pipeline}})
    assert response.status_code == 201, response.text
    return str(response.json()["agentId"])


def exotel_call(client: TestClient, agent_id: str) -> str:
    response = client.post(f"/api/agents/{agent_id}/calls", json={"medium": {"exotel": {}}})
    assert response.status_code == 201, response.text
    return str(response.json()["callId"])


# --- in the database ----------------------------------------------------------------------------


def test_an_agents_pipeline_secrets_are_stored_sealed(client: TestClient, settings: Settings) -> None:
    create_agent(client, WEBSOCKET)
    create_agent(client, REALTIME)
    assert_sealed(stored(settings, "SELECT call_template FROM agents"))


def test_a_call_from_an_agent_carries_its_sealed_secrets_not_the_plaintext(
    client: TestClient, settings: Settings
) -> None:
    exotel_call(client, create_agent(client, WEBSOCKET))
    assert_sealed(stored(settings, "SELECT definition FROM calls"))


def test_a_call_without_an_agent_has_its_pipeline_secrets_sealed(
    client: TestClient, settings: Settings
) -> None:
    response = client.post("/api/calls", json={"medium": {"exotel": {}}, "pipeline": REALTIME})
    assert response.status_code == 201, response.text
    assert_sealed(stored(settings, "SELECT definition FROM calls"))


def test_responses_still_show_only_prefixes_of_sealed_secrets(client: TestClient) -> None:
    agent_id = create_agent(client, WEBSOCKET)
    shown = client.get(f"/api/agents/{agent_id}").json()["callTemplate"]["pipeline"]["websocket"]
    assert shown["secretPrefix"] == "s3cr" and shown["headers"] == {"Authorization": "Bear…"}
    assert "secret" not in shown and "sealed" not in json.dumps(shown)


# --- opened for a live call ---------------------------------------------------------------------


def test_the_pipeline_of_a_live_call_gets_the_plaintext_secrets(client: TestClient) -> None:
    pipeline = live_pipeline(client, exotel_call(client, create_agent(client, WEBSOCKET)))
    assert isinstance(pipeline, WebSocketPipeline)
    headers = pipeline._handshake_headers("call-1")
    assert headers["Authorization"] == BEARER and revealed(pipeline.options.secret or "") == SECRET


def test_a_call_without_an_agent_opens_its_own_secrets(client: TestClient) -> None:
    response = client.post("/api/calls", json={"medium": {"exotel": {}}, "pipeline": REALTIME})
    pipeline = live_pipeline(client, response.json()["callId"])
    assert pipeline._auth_headers() == {"Authorization": f"Bearer {API_KEY}"}


def test_patching_the_name_keeps_the_sealed_secrets_working(client: TestClient, settings: Settings) -> None:
    agent_id = create_agent(client, WEBSOCKET)
    assert client.patch(f"/api/agents/{agent_id}", json={"name": "renamed"}).status_code == 200
    assert_sealed(stored(settings, "SELECT call_template FROM agents"))
    pipeline = live_pipeline(client, exotel_call(client, agent_id))
    assert pipeline._handshake_headers("c")["Authorization"] == BEARER


def test_patching_the_pipeline_seals_the_new_secrets(client: TestClient, settings: Settings) -> None:
    agent_id = create_agent(client, {"echo": {}})
    response = client.patch(f"/api/agents/{agent_id}", json={"callTemplate": {"pipeline": REALTIME}})
    assert response.status_code == 200, response.text
    assert response.json()["callTemplate"]["pipeline"]["openaiRealtime"]["apiKeyPrefix"] == "sk-l"
    assert_sealed(stored(settings, "SELECT call_template FROM agents"))


async def test_another_instance_with_the_same_key_opens_a_call_it_did_not_create(database: Database) -> None:
    calls = CallRepository(database, PipelineSecrets(SecretBox("shared key")))
    row = await calls.add(new_call(REALTIME))
    read_back = await CallRepository(database).get(row.id)
    assert read_back is not None
    other_instance = PipelineSecrets(SecretBox("shared key"))
    opened = other_instance.open(read_back.definition.pipeline, f"call/{row.id}")
    assert opened == REALTIME
    with pytest.raises(SecretDecryptionError):
        PipelineSecrets(SecretBox("another key")).open(read_back.definition.pipeline, f"call/{row.id}")


async def test_a_sealed_secret_copied_to_another_agent_does_not_open(database: Database) -> None:
    secrets = PipelineSecrets(SecretBox("k"))
    agents = AgentRepository(database, secrets)
    now = utcnow()
    row = await agents.add(
        AgentRow(id="a1", name="n", call_template={"pipeline": REALTIME}, created=now, updated=now)
    )
    assert secrets.open(row.call_template["pipeline"], agent_owner("a1")) == REALTIME
    with pytest.raises(SecretDecryptionError):
        secrets.open(row.call_template["pipeline"], agent_owner("a2"))


async def test_a_store_without_a_secret_box_refuses_plaintext_pipeline_secrets(database: Database) -> None:
    with pytest.raises(ValueError, match="openaiRealtime/apiKey"):
        await CallRepository(database).add(new_call(REALTIME))


def test_a_pipeline_given_a_still_sealed_secret_refuses_to_use_it() -> None:
    sealed = PipelineSecrets(SecretBox("k")).seal(REALTIME, "call/c1")
    options = OpenAIRealtimeOptions.model_validate(sealed["openaiRealtime"])
    with pytest.raises(SealedSecretError):
        revealed(options.api_key or "")


# --- never in repr ------------------------------------------------------------------------------


def test_pipeline_options_keep_secrets_and_header_values_out_of_repr() -> None:
    shown = repr(WebSocketOptions.model_validate(WEBSOCKET["websocket"]))
    assert SECRET not in shown and BEARER not in shown


@pytest.mark.parametrize(
    ("model", "fields", "secret"),
    [
        (TwilioConfig, {"accountSid": "AC1"}, {"authToken": "twilio-token-secret"}),
        (TelnyxConfig, {"publicKey": "A" * 43 + "="}, {"apiKey": "KEY-telnyx-secret"}),
    ],
)
def test_telephony_config_secrets_are_hidden_from_repr_and_str(
    model: type[Any], fields: dict[str, str], secret: dict[str, str]
) -> None:
    config = model.model_validate({**fields, **secret})
    (value,) = secret.values()
    assert value not in repr(config) and value not in str(config)
    assert value in config.credentials().values()  # still there for the provider code


def new_call(pipeline: dict[str, Any]) -> CallRow:
    now = utcnow()
    return CallRow(
        id=str(uuid.uuid4()),
        agent_id=None,
        created=now,
        medium_kind="exotel",
        stream_signature_required=False,
        definition=CallDefinition(join_timeout=30, max_duration=60, medium={"exotel": {}}, pipeline=pipeline),
    )
