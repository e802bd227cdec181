"""`GET /openapi.json` describes every route as the app serves it; `GET /docs` renders it offline."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from app.api.openapi import build_spec

#: The operations whose request body example the spec must carry (the main bodies of the API).
EXAMPLES = [
    ("post", "/api/agents"),
    ("patch", "/api/agents/{agent_id}"),
    ("post", "/api/agents/{agent_id}/calls"),
    ("post", "/api/calls"),
    ("post", "/api/calls/{call_id}/send_data_message"),
    ("post", "/api/telephony_configs/{provider}"),
    ("patch", "/api/telephony_configs/{provider}"),
    ("post", "/api/agents/{agent_id}/scheduled_batches"),
    ("patch", "/api/agents/{agent_id}/scheduled_batches/{batch_id}"),
    ("patch", "/api/sip"),
    ("post", "/api/sip/registrations"),
    ("patch", "/api/sip/registrations/{registration_id}"),
    ("post", "/api/webhooks"),
]
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def spec_of(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


def anonymous(client: TestClient) -> TestClient:
    """The same running app, without the API key."""
    return TestClient(client.app)


def http_routes(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(path, method) of every HTTP route, walked independently of the generator."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            path = _PARAM.sub(r"{\1}", prefix + route.path)
            found |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, Mount) and route.routes:
            found |= http_routes(route.routes, prefix + route.path)
        elif isinstance(route, Mount):  # one ASGI app (static files): every path under it
            found.add((prefix + route.path + "/{path}", "get"))
    return found


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for `schema` whose `#/components/...` references resolve in `spec`."""
    return Draft202012Validator({**schema, "components": spec["components"]})


def test_the_spec_is_valid_openapi_3_1(client: TestClient) -> None:
    spec = spec_of(client)
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_the_spec_needs_no_api_key(client: TestClient) -> None:
    assert anonymous(client).get("/openapi.json").status_code == 200


def test_every_http_route_is_in_the_spec_and_nothing_else(client: TestClient) -> None:
    spec = spec_of(client)
    assert {(path, method) for path, method, _ in operations(spec)} == http_routes(client.app.routes)


def test_the_websocket_route_is_described_as_an_extension(client: TestClient) -> None:
    websockets = {r.path for r in client.app.routes if isinstance(r, WebSocketRoute)}
    assert set(spec_of(client)["x-websockets"]) == websockets


def test_a_route_without_a_route_doc_is_refused() -> None:
    async def endpoint(request: object) -> Response:
        return Response()

    with pytest.raises(TypeError, match="/undocumented"):
        build_spec([Route("/undocumented", endpoint)])


def test_the_spec_security_is_what_the_server_enforces(client: TestClient) -> None:
    """An operation with the apiKey scheme answers 401 without a key; one with `security: []` does not."""
    spec = spec_of(client)
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    caller = anonymous(client)
    for path, method, op in operations(spec):
        url = _PARAM.sub("x", path)
        status = caller.request(method, url).status_code
        if op["security"] == [{"apiKey": []}]:
            assert status == 401, f"{method} {path}"
        else:
            assert op["security"] == [] and status != 401, f"{method} {path}"


def test_api_routes_document_the_api_key_and_provider_routes_the_signature(client: TestClient) -> None:
    provider_facing = {
        "/api/agents/{agent_id}/telephony_xml",
        "/api/calls/{call_id}/telephony/status",
        "/api/calls/{call_id}/telephony/answer",
        "/api/calls/{call_id}/telephony/transfer",
    }
    for path, method, op in operations(spec_of(client)):
        if path in provider_facing:
            assert op["security"] == [] and op["x-provider-signature"], f"{method} {path}"
            assert "signature" in op["description"]
            codes = op["responses"]["403"]["content"]["application/json"]["schema"]["properties"]["code"]
            assert "invalid_signature" in codes["enum"]
        elif path.startswith("/api/"):
            assert op["security"] == [{"apiKey": []}], f"{method} {path}"
        else:
            assert op["security"] == [], f"{method} {path}"


def test_bodies_and_responses_use_the_wire_names_and_values(client: TestClient) -> None:
    schemas = spec_of(client)["components"]["schemas"]
    start = schemas["StartCallRequest"]["properties"]
    assert "systemPrompt" in start and "system_prompt" not in start
    assert start["joinTimeout"]["default"] == "30s"
    assert "callId" in schemas["Call"]["properties"]


def test_every_error_response_has_the_common_error_shape(client: TestClient) -> None:
    spec = spec_of(client)
    assert spec["components"]["schemas"]["Error"]["required"] == ["detail", "code"]
    for path, method, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"] == [{"$ref": "#/components/schemas/Error"}], f"{method} {path}"


def test_a_real_error_is_one_the_spec_lists_for_its_route(client: TestClient) -> None:
    spec = spec_of(client)
    response = client.get("/api/agents/no-such-agent")
    schema = spec["paths"]["/api/agents/{agent_id}"]["get"]["responses"]["404"]["content"][
        "application/json"
    ]["schema"]
    assert response.status_code == 404
    resolve(spec, schema).validate(response.json())


def test_the_spec_has_the_examples_this_file_posts(client: TestClient) -> None:
    with_examples = {
        (method, path)
        for path, method, op in operations(spec_of(client))
        if "example" in op.get("requestBody", {}).get("content", {}).get("application/json", {})
    }
    assert with_examples == set(EXAMPLES)


class Resources:
    """The path parameters an example needs, each created through the API on first use."""

    def __init__(self, client: TestClient, spec: dict[str, Any]) -> None:
        self.client = client
        self.spec = spec
        self.made: dict[str, str] = {"provider": "twilio"}

    def example(self, method: str, path: str) -> dict[str, Any]:
        return self.spec["paths"][path][method]["requestBody"]["content"]["application/json"]["example"]

    def create(self, method: str, path: str, key: str) -> str:
        response = self.client.request(method, self.url(path), json=self.example(method, path))
        assert response.status_code == 201, response.text
        return response.json()[key]

    def value(self, name: str) -> str:
        if name not in self.made:
            made = {
                "agent_id": lambda: self.create("post", "/api/agents", "agentId"),
                "call_id": lambda: self.create("post", "/api/calls", "callId"),
                "batch_id": lambda: self.create(
                    "post", "/api/agents/{agent_id}/scheduled_batches", "batchId"
                ),
                "registration_id": lambda: self.create("post", "/api/sip/registrations", "registrationId"),
            }
            self.made[name] = made[name]()
        return self.made[name]

    def url(self, path: str) -> str:
        return _PARAM.sub(lambda m: self.value(m[1]), path)


@pytest.mark.parametrize(("method", "path"), EXAMPLES, ids=[f"{m} {p}" for m, p in EXAMPLES])
def test_a_body_example_fits_its_schema_and_is_answered_as_documented(
    client: TestClient, method: str, path: str
) -> None:
    spec = spec_of(client)
    resources = Resources(client, spec)
    if method == "patch" and path == "/api/telephony_configs/{provider}":
        resources.create("post", path, "created")  # there must be credentials to change
    example = resources.example(method, path)
    body_schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    resolve(spec, body_schema).validate(example)
    response = client.request(method, resources.url(path), json=example)
    assert 200 <= response.status_code < 300, response.text
    success = spec["paths"][path][method]["responses"][str(response.status_code)]
    if "content" in success:
        resolve(spec, success["content"]["application/json"]["schema"]).validate(response.json())


def test_docs_page_loads_only_assets_callbridge_serves(client: TestClient) -> None:
    caller = anonymous(client)
    page = caller.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(url.startswith("/docs/assets/") for url in assets), assets
    for url in assets:
        assert caller.get(url).status_code == 200, url


def test_docs_page_renders_the_spec_with_swagger_ui(client: TestClient) -> None:
    caller = anonymous(client)
    init = caller.get("/docs/assets/init.js")
    assert "SwaggerUIBundle" in init.text and '"/openapi.json"' in init.text
    bundle = caller.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text


def test_a_missing_docs_asset_is_a_404_in_the_error_shape(client: TestClient) -> None:
    response = anonymous(client).get("/docs/assets/no-such-file.js")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_sip_config_with_a_fallback_handler_is_answered_as_documented(client: TestClient) -> None:
    spec = spec_of(client)
    ops = spec["paths"]["/api/sip"]
    patched = client.patch("/api/sip", json={"fallbackHandler": {"url": "https://example.com/sip"}})
    shown = client.get("/api/sip")
    assert patched.status_code == 200 and "secrets" in patched.json()["fallbackHandler"]
    assert "secrets" not in shown.json()["fallbackHandler"]
    for method, response in (("patch", patched), ("get", shown)):
        resolve(spec, ops[method]["responses"]["200"]["content"]["application/json"]["schema"]).validate(
            response.json()
        )


def test_the_documented_page_size_bounds_are_the_api_s(client: TestClient) -> None:
    params = spec_of(client)["paths"]["/api/agents"]["get"]["parameters"]
    bounds = next(p["schema"] for p in params if p["name"] == "pageSize")
    assert client.get(f"/api/agents?pageSize={bounds['maximum']}").status_code == 200
    refused = client.get(f"/api/agents?pageSize={bounds['maximum'] + 1}")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_page_size"
