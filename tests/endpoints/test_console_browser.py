"""The learning console in a real Chromium (Playwright driving Debian's ``chromium``, launched by path: no
browser download) against the real server: the page asks for the admin key, pauses and resumes learning, shows a
taught fact's new version with its gate results after the Trigger button, and rolls it back with the Rollback
button and its confirmation. The server runs the tiny checkpoint: a learning task on the built-in model takes
45-65 s on the CI machine's two shared cores, the tiny one 10-20 s.

A screenshot of each state goes to the test's temporary directory; with ``APHRODITE_CONSOLE_SCREENSHOT=PATH``
the promoted state is also written to PATH (how docs/console.png is made).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.operator_server import ADMIN_KEY as ADMIN
from tests.server_process import RemoteServer

BROWSER_TIMEOUT_MS = 90_000
"""Longest wait for one state of the page (a learning task on the tiny model takes 10-20 s on 2 shared cores)."""


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get; here apt-get was not "
                "available or failed)")


@pytest.fixture
def server(operator_server: RemoteServer) -> RemoteServer:
    """tests/operator_server.py: the tiny checkpoint with an admin key, shared with the CLI and dashboard tests."""
    return operator_server


def admin(server: RemoteServer, method: str, path: str, **kw) -> dict:
    r = httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_console_trigger_shows_the_new_version_and_rollback_restores_the_old(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is in the test extra: pip install -e '.[test]'")
    executable = chromium_path()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # traffic for the feedback plot and the interactions table; a fact to teach
    chat = admin(server, "POST", "/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 4})
    admin(server, "POST", "/v1/learning/feedback", json={"response_id": chat["id"], "user_satisfaction": 0.5,
                                                         "comment": "fine"})
    before = admin(server, "GET", "/v1/learning/versions")
    old, new = str(before["serving"]), str(max(v["version"] for v in before["data"]) + 1)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(server.url) else None)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            expect = sync_api.expect
            expect.set_options(timeout=BROWSER_TIMEOUT_MS)

            page.goto(server.url + "/console")
            # without a key: the user routes answer (no user keys configured), the admin-only interactions do not
            expect(page.locator("#serving-version")).to_have_text(old, timeout=15_000)
            expect(page.locator("#interactions-note")).to_contain_text("need the admin key")
            page.screenshot(path=shots / "1-no-key.png")

            page.fill("#key-input", ADMIN)
            page.click("#key-save")
            expect(page.locator(f'#versions tr[data-version="{old}"]')).to_have_class("serving")
            expect(page.locator(f'#interactions tr[data-id="{chat["id"]}"]')).to_contain_text("fine")
            page.screenshot(path=shots / "2-base.png", full_page=True)
            page.click("#btn-pause")
            expect(page.locator("#learning-state")).to_have_text("paused")
            expect(page.locator("#btn-pause")).to_have_text("Resume")
            assert admin(server, "GET", "/v1/learning/status")["paused"] is True
            page.click("#btn-pause")
            expect(page.locator("#learning-state")).to_have_text("healthy")

            fact = admin(server, "POST", "/v1/learning/manual", json={
                "prompt": "What is the capital of Zorbania?", "response": "The capital of Zorbania is Quillport.",
                "performance_feedback": 1.0})
            page.click("#btn-trigger")
            row = page.locator(f'#versions tr[data-version="{new}"]')
            expect(row).to_have_class("serving")
            expect(page.locator("#serving-version")).to_have_text(new)
            expect(row.locator(".gate-target")).to_contain_text("passed")
            expect(row.locator(".gate-heldout")).to_contain_text("passed")
            expect(page.locator("#timeline")).to_contain_text(f"version {new} promoted (from {old})")
            expect(page.locator(f'#interactions tr[data-id="{fact["id"]}"]')).to_contain_text("Quillport")
            expect(page.locator("#loss-plot svg circle")).not_to_have_count(0)
            page.screenshot(path=shots / "3-promoted.png", full_page=True)
            if os.environ.get("APHRODITE_CONSOLE_SCREENSHOT"):
                page.screenshot(path=os.environ["APHRODITE_CONSOLE_SCREENSHOT"], full_page=True)

            expect(page.locator("#rollback-select")).to_have_value(old)  # the serving version's parent
            page.click("#btn-rollback")
            expect(page.locator("#confirm")).to_be_visible()
            expect(page.locator("#confirm-text")).to_contain_text(f"Serve version {old} instead of version {new}")
            page.screenshot(path=shots / "4-confirm.png")
            page.click("#confirm-yes")
            expect(page.locator("#serving-version")).to_have_text(old)
            expect(page.locator(f'#versions tr[data-version="{old}"]')).to_have_class("serving")
            expect(page.locator("#timeline")).to_contain_text(f"version {old} serves (was {new})")
            page.screenshot(path=shots / "5-rolled-back.png", full_page=True)
        finally:
            browser.close()

    listed = admin(server, "GET", "/v1/learning/versions")
    assert listed["serving"] == int(old)
    assert [v["version"] for v in listed["data"] if v["serving"]] == [int(old)]
    assert int(new) in [v["version"] for v in listed["data"]]  # kept for a later rollback
    assert not errors, errors
    assert not outside, f"the console fetched from elsewhere: {outside}"
    assert sorted(f.name for f in shots.iterdir()) == ["1-no-key.png", "2-base.png", "3-promoted.png",
                                                        "4-confirm.png", "5-rolled-back.png"]
