"""`serve --workers N`: which settings it runs with, and why not with the others."""

from __future__ import annotations

from pathlib import Path

from app.workers import workers_problem
from tests.conftest import make_settings


def test_one_worker_runs_with_any_settings(tmp_path: Path) -> None:
    assert workers_problem(make_settings(tmp_path, sip_listen="udp:127.0.0.1:5060"), 1) is None


def test_several_workers_need_redis(tmp_path: Path) -> None:
    problem = workers_problem(make_settings(tmp_path), 2)
    assert problem is not None and "CALLBRIDGE_REDIS_URL" in problem


def test_several_workers_run_with_redis(tmp_path: Path) -> None:
    assert workers_problem(make_settings(tmp_path, redis_url="redis://127.0.0.1:6379/0"), 4) is None


def test_several_workers_do_not_serve_sip(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:6379/0", sip_listen="udp:127.0.0.1:5060")
    problem = workers_problem(settings, 2)
    assert problem is not None and "SIP" in problem


def test_zero_workers_is_refused(tmp_path: Path) -> None:
    assert workers_problem(make_settings(tmp_path), 0) is not None
