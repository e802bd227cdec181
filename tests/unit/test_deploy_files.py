"""deploy/: the Dockerfile, compose file, nginx and Kamailio configs and the Helm chart are checked here as
far as this machine allows (no Docker daemon: the image is not built; the chart is rendered and linted by
Helm's own Go SDK through helm-python-sdk; nginx -t and kamailio -c where those are installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.sip_peers.kamailio import dispatcher_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "callbridge"
CHART_VALUES: dict[str, Any] = {"secret": {"secretKey": "k" * 32}}


def setting_names() -> set[str]:
    """Every environment variable app/settings.py reads, read at test time (new fields count at once)."""
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def require_tool(name: str) -> str:
    """The tool's path; skipped where it is missing, a failure under CALLBRIDGE_REQUIRE_DEPLOY_TOOLS (CI)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CALLBRIDGE_REQUIRE_DEPLOY_TOOLS"):
            pytest.fail(f"{name} is required (CALLBRIDGE_REQUIRE_DEPLOY_TOOLS) but not installed")
        pytest.skip(f"{name} is not installed (Debian: apt-get install nginx-light kamailio)")
    return path


def helm_sdk() -> Any:
    """helm-python-sdk (the `deploy-checks` extra, installed by .ci/run); skipped where it is missing, a
    failure under CALLBRIDGE_REQUIRE_DEPLOY_TOOLS."""
    try:
        import helm_python
    except ImportError:
        if os.environ.get("CALLBRIDGE_REQUIRE_DEPLOY_TOOLS"):
            pytest.fail("helm-python-sdk is required (CALLBRIDGE_REQUIRE_DEPLOY_TOOLS) but not installed")
        pytest.skip("helm-python-sdk is not installed (pip install -e '.[deploy-checks]')")
    return helm_python


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def rendered_chart(values: dict[str, Any]) -> dict[str, Any]:
    """The chart rendered by Helm, as {kind: manifest}."""
    with helm_sdk().Chart.load(CHART) as chart:
        manifests = chart.render(values, name="cb", namespace="calls")
    documents = [yaml.safe_load(text) for text in manifests.values() if text.strip()]
    return {doc["kind"]: doc for doc in documents if doc}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(ROOT) for p in DEPLOY.rglob("*.yaml") if "templates" not in p.parts)
)
def test_every_yaml_file_parses(path: Path) -> None:
    assert yaml.safe_load((ROOT / path).read_text()) is not None


def test_dockerfile_builds_in_one_stage_and_runs_in_another() -> None:
    stages = [arg for op, arg in dockerfile_instructions() if op == "FROM"]
    assert len(stages) >= 2
    assert stages[-1].startswith("python:3.13-slim")
    assert any(op == "COPY" and arg.startswith("--from=") for op, arg in dockerfile_instructions())


def test_dockerfile_runs_as_a_user_other_than_root() -> None:
    users = [arg for op, arg in dockerfile_instructions() if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_dockerfile_health_check_asks_readyz() -> None:
    checks = [arg for op, arg in dockerfile_instructions() if op == "HEALTHCHECK"]
    assert len(checks) == 1 and "/readyz" in checks[0]


def test_dockerfile_runs_callbridge_serve() -> None:
    instructions = dict(dockerfile_instructions())
    assert instructions["ENTRYPOINT"] == '["callbridge"]'
    assert instructions["CMD"] == '["serve"]'


def test_dockerignore_leaves_out_the_venv_and_data() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data/"} <= set(ignored)


def test_compose_sets_only_settings_callbridge_reads() -> None:
    names = {
        name
        for service in compose()["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("CALLBRIDGE_")
    }
    assert names and names - setting_names() == set()


def test_compose_instances_share_one_database_redis_and_secret_key() -> None:
    services = compose()["services"]
    instances = [s for name, s in services.items() if name.startswith("callbridge-")]
    assert len(instances) >= 2
    for key in ("CALLBRIDGE_DATABASE_URL", "CALLBRIDGE_REDIS_URL", "CALLBRIDGE_SECRET_KEY"):
        values = {instance["environment"][key] for instance in instances}
        assert len(values) == 1, key
    assert instances[0]["environment"]["CALLBRIDGE_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_compose_instances_start_after_the_migration_has_run() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    for name, service in services.items():
        if name.startswith("callbridge-"):
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    # The upstream names resolve only inside compose's network.
    text = re.sub(r"callbridge-\d", "127.0.0.1", (DEPLOY / "nginx.conf").read_text())
    config = tmp_path / "nginx.conf"
    config.write_text(text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    check = subprocess.run(
        [nginx, "-t", "-c", str(config), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


def test_nginx_media_route_upgrades_websockets_without_buffering() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    media = text.split("location ~ ^/calls/[^/]+/stream/", 1)[1].split("}", 1)[0]
    for directive in (
        "proxy_http_version 1.1",
        "proxy_set_header Upgrade $http_upgrade",
        "proxy_set_header Connection $connection_upgrade",
        "proxy_set_header X-Forwarded-Proto $scheme",
        "proxy_set_header Host $http_host",
        "proxy_read_timeout 4h",
        "proxy_request_buffering off",
    ):
        assert directive in media


def kamailio_config(tmp_path: Path, extra: str = "") -> Path:
    return dispatcher_config(tmp_path, DEPLOY / "kamailio" / "dispatcher.list", extra=extra)


def kamailio_check(config: Path) -> subprocess.CompletedProcess[str]:
    kamailio = require_tool("kamailio")
    return subprocess.run([kamailio, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)


def test_kamailio_config_passes_kamailio_c(tmp_path: Path) -> None:
    check = kamailio_check(kamailio_config(tmp_path))
    assert check.returncode == 0, check.stderr[-2000:]


def test_kamailio_check_refuses_a_broken_config(tmp_path: Path) -> None:
    assert kamailio_check(kamailio_config(tmp_path, extra="\nroute[BROKEN] { t_relay( }\n")).returncode != 0


def test_kamailio_config_dispatches_record_routes_and_probes() -> None:
    text = (DEPLOY / "kamailio" / "kamailio.cfg").read_text()
    needles = ('loadmodule "dispatcher.so"', "record_route()", "loose_route()", "ds_select_dst(", "t_relay()")
    for needle in needles:
        assert needle in text
    assert 'modparam("dispatcher", "ds_ping_method", "OPTIONS")' in text


def test_helm_lint_finds_no_errors() -> None:
    report = helm_sdk().lint(CHART, CHART_VALUES, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert problems == []


def test_helm_chart_refuses_to_render_without_a_secret_key() -> None:
    with pytest.raises(helm_sdk().HelmError, match="secretKey"):
        rendered_chart({})


def test_helm_chart_renders_every_resource() -> None:
    kinds = set(rendered_chart(CHART_VALUES))
    expected = {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"}
    expected.add("PodDisruptionBudget")
    assert expected <= kinds


def test_helm_config_and_secret_set_only_settings_callbridge_reads() -> None:
    values = CHART_VALUES | {"sip": {"enabled": True}}
    manifests = rendered_chart(values)
    names = set(manifests["ConfigMap"]["data"]) | set(manifests["Secret"]["stringData"])
    env = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0].get("env", [])
    names |= {item["name"] for item in env}
    assert names - setting_names() == set()


def test_helm_grace_period_outlasts_the_drain_timeout() -> None:
    values = CHART_VALUES | {"config": {"drainTimeout": 120}, "drainMarginSeconds": 20}
    pod = rendered_chart(values)["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 140


def test_helm_probes_readyz_for_readiness_and_healthz_for_liveness() -> None:
    container = rendered_chart(CHART_VALUES)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_helm_sip_uses_the_host_network_and_advertises_the_pod_address() -> None:
    pod = rendered_chart(CHART_VALUES | {"sip": {"enabled": True}})["Deployment"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    env = {item["name"]: item for item in pod["containers"][0]["env"]}
    assert env["CALLBRIDGE_SIP_PUBLIC_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
