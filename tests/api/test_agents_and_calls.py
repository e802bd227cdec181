"""Agents with call templates, and calls created from them (or directly)."""

from __future__ import annotations

from starlette.testclient import TestClient

TEMPLATE = {
    "systemPrompt": "You help {{user.name}} (account {{account.id}}).",
    "contextSchema": {
        "type": "object",
        "properties": {
            "user": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        },
        "required": ["user"],
    },
    "joinTimeout": "10s",
    "maxDuration": "120s",
}


def create_agent(client: TestClient, **template: object) -> dict:
    response = client.post("/api/agents", json={"name": "helper", "callTemplate": {**TEMPLATE, **template}})
    assert response.status_code == 201, response.text
    return response.json()


def test_an_agent_is_created_with_defaults_filled_in(client: TestClient) -> None:
    agent = create_agent(client)
    template = agent["callTemplate"]
    assert template["pipeline"] == {"echo": {}}
    assert template["firstSpeakerSettings"] == {"agent": {"uninterruptible": False}}
    assert template["joinTimeout"] == "10s" and template["created"] and template["updated"]
    assert agent["statistics"] == {"calls": 0}
    assert client.get(f"/api/agents/{agent['agentId']}").json() == agent


def test_agents_are_listed_newest_first_with_paging(client: TestClient) -> None:
    ids = [create_agent(client)["agentId"] for _ in range(3)]
    page = client.get("/api/agents?pageSize=2").json()
    assert [a["agentId"] for a in page["results"]] == ids[::-1][:2] and page["total"] == 3
    assert page["previous"] is None
    rest = client.get(page["next"]).json()
    assert [a["agentId"] for a in rest["results"]] == [ids[0]] and rest["next"] is None


def test_patch_replaces_only_the_given_template_fields(client: TestClient) -> None:
    agent = create_agent(client)
    response = client.patch(
        f"/api/agents/{agent['agentId']}", json={"name": "renamed", "callTemplate": {"maxDuration": "60s"}}
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["name"] == "renamed"
    assert patched["callTemplate"]["maxDuration"] == "60s"
    assert patched["callTemplate"]["systemPrompt"] == TEMPLATE["systemPrompt"]


def test_invalid_template_fields_name_their_path(client: TestClient) -> None:
    response = client.post("/api/agents", json={"name": "x", "callTemplate": {"joinTimeout": "soon"}})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("callTemplate.joinTimeout: invalid duration 'soon'")
    agent = create_agent(client)
    response = client.patch(f"/api/agents/{agent['agentId']}", json={"callTemplate": {"pipeline": {"x": {}}}})
    assert response.status_code == 400 and "unknown pipeline 'x'" in response.json()["detail"]


def test_deleting_an_agent(client: TestClient) -> None:
    agent = create_agent(client)
    assert client.delete(f"/api/agents/{agent['agentId']}").status_code == 204
    assert client.get(f"/api/agents/{agent['agentId']}").status_code == 404
    assert client.delete(f"/api/agents/{agent['agentId']}").status_code == 404


def test_an_agent_call_renders_the_template_with_its_context(client: TestClient) -> None:
    agent = create_agent(client)
    response = client.post(
        f"/api/agents/{agent['agentId']}/calls",
        json={
            "templateContext": {"user": {"name": "Ada"}, "account": {"id": 42}},
            "metadata": {"crm": "7"},
            "maxDuration": "30s",
        },
    )
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["systemPrompt"] == "You help Ada (account 42)."
    assert call["agentId"] == agent["agentId"]
    assert call["metadata"] == {"crm": "7"}
    assert (call["joinTimeout"], call["maxDuration"]) == ("10s", "30s")
    assert call["medium"] == {"twilio": {}}
    assert call["joined"] is None and call["ended"] is None and call["endReason"] is None
    assert call["billedDuration"] == "0s"
    assert call["joinUrl"].startswith(f"wss://bridge.example.com/calls/{call['callId']}/stream/")
    assert client.get(f"/api/calls/{call['callId']}").json() == call
    assert client.get(f"/api/agents/{agent['agentId']}").json()["statistics"] == {"calls": 1}


def test_a_context_that_breaks_the_schema_is_400_naming_the_path(client: TestClient) -> None:
    agent = create_agent(client)
    response = client.post(
        f"/api/agents/{agent['agentId']}/calls", json={"templateContext": {"user": {"name": 5}}}
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "templateContext.user.name: 5 is not of type 'string'",
        "code": "invalid_template_context",
    }


def test_calls_can_only_override_the_documented_fields(client: TestClient) -> None:
    agent = create_agent(client)
    response = client.post(f"/api/agents/{agent['agentId']}/calls", json={"systemPrompt": "override"})
    assert response.status_code == 400 and "systemPrompt" in response.json()["detail"]


def test_sip_calls_are_refused_when_the_server_does_not_listen_for_sip(client: TestClient) -> None:
    agent = create_agent(client)
    outgoing = {"to": "sip:bob@127.0.0.1", "from": "sip:agent@127.0.0.1"}
    response = client.post(
        f"/api/agents/{agent['agentId']}/calls",
        json={"medium": {"sip": {"outgoing": outgoing}}, "templateContext": {"user": {"name": "A"}}},
    )
    assert response.status_code == 400 and response.json()["code"] == "sip_disabled"


def test_an_outgoing_call_without_the_providers_credentials_is_refused(client: TestClient) -> None:
    agent = create_agent(client)
    response = client.post(
        f"/api/agents/{agent['agentId']}/calls",
        json={
            "medium": {"twilio": {"outgoing": {"to": "+15550001111", "from": "+15550002222"}}},
            "templateContext": {"user": {"name": "A"}},
        },
    )
    assert response.status_code == 400
    assert response.json()["code"] == "telephony_config_missing"
    assert "/api/telephony_configs/twilio" in response.json()["detail"]


def test_a_direct_call_needs_no_agent(client: TestClient) -> None:
    response = client.post(
        "/api/calls", json={"systemPrompt": "Be brief.", "pipeline": {"echo": {"delay": "1s"}}}
    )
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["agentId"] is None and call["systemPrompt"] == "Be brief."


def test_calls_are_filtered_by_agent(client: TestClient) -> None:
    first, second = create_agent(client), create_agent(client)
    for agent in (first, second, first):
        client.post(
            f"/api/agents/{agent['agentId']}/calls", json={"templateContext": {"user": {"name": "A"}}}
        )
    listed = client.get(f"/api/calls?agentId={first['agentId']}").json()
    assert listed["total"] == 2 and {c["agentId"] for c in listed["results"]} == {first["agentId"]}
    assert client.get(f"/api/agents/{second['agentId']}/calls").json()["total"] == 1
    assert client.get("/api/calls").json()["total"] == 3


def test_call_events_start_with_the_creation(client: TestClient) -> None:
    agent = create_agent(client)
    call = client.post(
        f"/api/agents/{agent['agentId']}/calls", json={"templateContext": {"user": {"name": "A"}}}
    ).json()
    events = client.get(f"/api/calls/{call['callId']}/events?minimum_severity=debug").json()
    assert [e["type"] for e in events["results"]] == ["created"]
    event = events["results"][0]
    assert set(event) == {
        "callId",
        "callTimestamp",
        "wallClockTimestamp",
        "severity",
        "type",
        "text",
        "extras",
    }
    assert client.get(f"/api/calls/{call['callId']}/events").json()["results"] == []  # default: info and up
    assert client.get(f"/api/calls/{call['callId']}/events?minimum_severity=loud").status_code == 400


def test_agent_secrets_in_the_pipeline_are_write_only(client: TestClient) -> None:
    pipeline = {
        "openaiRealtime": {"url": "wss://rt.example.com/v1/realtime", "apiKey": "sk-live-1234567890"},
    }
    created = client.post("/api/agents", json={"name": "rt", "callTemplate": {"pipeline": pipeline}}).json()
    shown = created["callTemplate"]["pipeline"]["openaiRealtime"]
    assert "apiKey" not in shown and shown["apiKeyPrefix"] == "sk-l"
    assert "sk-live-1234567890" not in client.get(f"/api/agents/{created['agentId']}").text


def test_websocket_agent_secret_and_header_values_are_not_shown(client: TestClient) -> None:
    pipeline = {
        "websocket": {
            "url": "wss://a.example.com",
            "secret": "s3cr3t-value",
            "headers": {"Authorization": "Bearer abcdef"},
        }
    }
    created = client.post("/api/agents", json={"name": "ws", "callTemplate": {"pipeline": pipeline}}).json()
    shown = created["callTemplate"]["pipeline"]["websocket"]
    assert shown["secretPrefix"] == "s3cr" and shown["headers"] == {"Authorization": "Bear…"}


def test_a_server_websocket_rate_outside_the_supported_set_is_400(client: TestClient) -> None:
    response = client.post("/api/calls", json={"medium": {"serverWebSocket": {"inputSampleRate": 44100}}})
    assert response.status_code == 400 and "inputSampleRate" in response.json()["detail"]
