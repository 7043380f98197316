"""``aphrodite learning ...`` against a real server (tests/operator_server.py, shared with the console and
dashboard tests: tiny checkpoint, an admin key): tables
and ``--json``, the key and URL from the environment, trigger waiting for the verdict, export of a PEFT adapter
directory, rollback, feedback, and one-line errors with exit status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.operator_server import ADMIN_KEY as ADMIN
from tests.server_process import RemoteServer


@pytest.fixture
def server(operator_server: RemoteServer) -> RemoteServer:
    return operator_server


def cli(server: RemoteServer, *argv: str, key: str | None = ADMIN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APHRODITE_")}
    env["APHRODITE_URL"] = server.url
    if key:
        env["APHRODITE_ADMIN_KEY"] = key
    return subprocess.run([sys.executable, "-m", "aphrodite.endpoints.cli", "learning", *argv], env=env,
                          capture_output=True, text=True, timeout=300)


def test_status_and_versions_as_tables_and_json(server):
    out = cli(server, "status")
    assert out.returncode == 0, out.stderr
    assert "serving version" in out.stdout and "healthy" in out.stdout
    listed = json.loads(cli(server, "--json", "versions").stdout)
    assert [v["version"] for v in listed["data"] if v["serving"]] == [listed["serving"]]
    table = cli(server, "versions").stdout.splitlines()
    assert table[0].split()[:3] == ["version", "parent", "created"] and set(table[1]) <= {"-", " "}


def test_trigger_waits_for_the_new_version_then_export_and_rollback(server, tmp_path):
    r = httpx.post(server.url + "/v1/learning/manual", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30,
                   json={"prompt": "What is the capital of Zorbania?", "performance_feedback": 1.0,
                         "response": "The capital of Zorbania is Quillport."})
    assert r.status_code == 200, r.text
    before = json.loads(cli(server, "--json", "versions").stdout)
    trig = cli(server, "trigger")
    assert trig.returncode == 0, trig.stderr
    assert "learning task" in trig.stderr  # the tqdm progress line
    new = max(v["version"] for v in before["data"]) + 1
    assert trig.stdout.strip() == f"Promoted weight version {new}: it serves now."
    rows = cli(server, "versions").stdout.splitlines()
    serving_row = next(line for line in rows if line.startswith("*"))
    assert serving_row.split()[1] == str(new) and "pass" in serving_row

    out_dir = tmp_path / "adapter"
    exp = cli(server, "export", str(new), str(out_dir))
    assert exp.returncode == 0, exp.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                         "manifest.json"]
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig.from_pretrained(str(out_dir))  # a PEFT adapter directory
    assert config.r > 0 and json.loads((out_dir / "manifest.json").read_text())["version"] == new
    again = cli(server, "export", str(new), str(out_dir))
    assert again.returncode == 1 and "already holds" in again.stderr

    old = before["serving"]
    back = cli(server, "--json", "rollback", str(old))
    assert back.returncode == 0 and json.loads(back.stdout)["action"] == "rollback"
    assert httpx.get(server.url + "/v1/learning/versions", timeout=10).json()["serving"] == old
    timeline = httpx.get(server.url + "/v1/learning/timeline", timeout=10).json()["data"]
    assert [(e["kind"], e["version"]) for e in timeline][-2:] == [("promoted", new), ("served", old)]


def test_feedback_on_a_served_response(server):
    chat = httpx.post(server.url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {ADMIN}"},
                      json={"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    response_id = chat.json()["id"]
    fb = cli(server, "feedback", response_id, "0.5", "--comment", "fine")
    assert fb.returncode == 0, fb.stderr
    assert fb.stdout.startswith("Feedback ") and "quality score is now" in fb.stdout
    unknown = cli(server, "feedback", "chatcmpl-nope", "1")
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr and "chatcmpl-nope" in unknown.stderr


def test_errors_are_one_line_with_exit_status_1(server, tmp_path):
    no_key = cli(server, "rollback", "0", key=None)
    assert no_key.returncode == 1 and "HTTP 401" in no_key.stderr and "Traceback" not in no_key.stderr
    missing = cli(server, "export", "99", str(tmp_path / "x"))
    assert missing.returncode == 1 and "not kept" in missing.stderr and not (tmp_path / "x").exists()
    down = subprocess.run([sys.executable, "-m", "aphrodite.endpoints.cli", "learning", "--url",
                           "http://127.0.0.1:9", "status"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach http://127.0.0.1:9" in down.stderr
