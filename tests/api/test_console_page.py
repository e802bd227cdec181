"""`GET /console`: a public page that runs only its own files."""

from __future__ import annotations

import re

from starlette.testclient import TestClient


def test_the_console_page_and_its_files_are_served_without_a_key(client: TestClient) -> None:
    caller = TestClient(client.app)
    page = caller.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    files = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert files and all(caller.get(url).status_code == 200 for url in files), files


def test_the_console_page_allows_no_script_but_its_own(client: TestClient) -> None:
    policy = TestClient(client.app).get("/console").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert directives["connect-src"] == "'self'"
