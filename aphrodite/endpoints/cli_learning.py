"""``aphrodite learning ...``: watch and steer a running server's learning from a terminal.

The server and key come from ``--url`` / ``--api-key`` or ``$APHRODITE_URL`` and ``$APHRODITE_ADMIN_KEY``
(else ``$APHRODITE_API_KEY``). Output is a readable table, or the route's JSON with ``--json``; waits (a
learning task, an export) show a tqdm progress bar on stderr. Exit status 1 when the server refuses.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

DEFAULT_URL = "http://127.0.0.1:2242"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "manifest.json")


class CommandError(RuntimeError):
    """A failure to report in one line (the server's error message, or what could not be reached)."""


class Client:
    """The /v1/learning routes of one server, with the bearer key when there is one."""

    def __init__(self, url: str, key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._send("GET", path, params=params))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._send("POST", path, json=body))

    def control(self, action: str, version: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"action": action} if version is None else {"action": action, "version": version}
        return self.post("/v1/learning/control", body)

    def download(self, path: str, progress: bool) -> bytes:
        try:
            with self.http.stream("GET", path) as r:
                if r.status_code >= 400:
                    r.read()
                    self._json(r)
                total = int(r.headers.get("content-length", 0)) or None
                buf = io.BytesIO()
                with tqdm(total=total, unit="B", unit_scale=True, desc="export", disable=not progress) as bar:
                    for chunk in r.iter_bytes():
                        buf.write(chunk)
                        bar.update(len(chunk))
                return buf.getvalue()
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {self.url}: {exc}") from exc

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise CommandError(f"cannot reach {self.url}: {exc}") from exc

    @staticmethod
    def _json(r: httpx.Response) -> Any:
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            message = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise CommandError(f"{message or r.text[:200]} (HTTP {r.status_code})")
        return body


# -- output ------------------------------------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    cells = [[("" if c is None else str(c)) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _passed(part: dict[str, Any] | None) -> str:
    return "" if not part else "pass" if part.get("passed") else "FAIL"


def versions_table(listing: dict[str, Any]) -> str:
    rows = []
    for v in listing["data"]:
        gate = v.get("gate") or {}
        target, facts, held = gate.get("target") or {}, gate.get("protected_facts") or {}, gate.get("heldout") or {}
        before, after = target.get("heldout_before", target.get("train_before")), target.get(
            "heldout_after", target.get("train_after"))
        rows.append(["*" if v["serving"] else "", v["version"], v.get("parent"), _when(v.get("created")),
                     ", ".join(f"{k}={n}" for k, n in (v.get("signals") or {}).items()), v.get("interactions", ""),
                     f"{before:.3f} -> {after:.3f} {_passed(target)}" if target else "",
                     f"{facts.get('count', 0)} {_passed(facts)}" if facts else "",
                     f"x{held.get('perplexity_ratio', 0):.4f} {_passed(held)}" if held else "",
                     json.dumps(v["canary"]) if v.get("canary") else ""])
    return table(["", "version", "parent", "created", "signals", "interactions", "target loss", "protected facts",
                  "held-out ppl", "canary"], rows)


def status_text(s: dict[str, Any]) -> str:
    o, h = s.get("overview", {}), s.get("system_health", {})
    rows = [["serving version", s["weight_version"]], ["status", s["status"]],
            ["learning enabled", s["learning_enabled"]], ["paused", s["paused"]], ["model", s.get("model")],
            ["interactions", o.get("total_interactions")], ["eligible", o.get("eligible_interactions")],
            ["feedback", o.get("feedback_count")], ["learning rate", o.get("current_learning_rate")],
            ["write queue", h.get("write_queue_depth")], ["dropped", h.get("dropped_interactions")],
            ["recent failures", h.get("recent_failures")]]
    if s.get("learner_notice"):
        rows.append(["notice", s["learner_notice"]])
    if s.get("canary"):
        rows.append(["canary", json.dumps(s["canary"])])
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


# -- commands ------------------------------------------------------------------------------------------------------

def wait_for_task(client: Client, since: float, wait_s: float, progress: bool) -> dict[str, Any] | None:
    """Poll until no learning task runs; the verdict (timeline event) recorded since ``since``, if any."""
    deadline = time.monotonic() + wait_s
    with tqdm(desc="learning task", bar_format="{desc}: {elapsed} {postfix}", disable=not progress) as bar:
        while True:
            active = client.get("/v1/learning/metrics")["learning"]["active_learning_tasks"]
            if not active:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"the learning task still runs after {wait_s:g} s; it goes on in the server")
            bar.set_postfix_str("training and gating")
            bar.update()
            time.sleep(0.5)
    events = [e for e in client.get("/v1/learning/timeline", limit=50)["data"]
              if e["time"] >= since and e["kind"] in ("promoted", "refused", "canary")]
    return events[-1] if events else None


def cmd_trigger(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
    since = time.time() - 1.0  # clock of this machine vs the server's: loopback or NTP, a second is plenty
    reply = client.control("trigger")
    if args.no_wait or "started" not in reply["message"]:
        return reply, reply["message"]
    verdict = wait_for_task(client, since, args.wait_s, progress=not args.json)
    if verdict is None:
        return {**reply, "verdict": None}, ("The learning task ended with no new version and no refusal: the signal "
                                            "policy admitted nothing, or the task failed ('status' counts failures).")
    if verdict["kind"] == "promoted":
        return {**reply, "verdict": verdict}, f"Promoted weight version {verdict['version']}: it serves now."
    if verdict["kind"] == "canary":
        return {**reply, "verdict": verdict}, (f"Weight version {verdict['version']} passed the gate and runs as a "
                                               f"canary ({verdict.get('reason')}); 'status' shows its test.")
    return {**reply, "verdict": verdict}, f"The candidate was refused: {verdict.get('reason')}"


def cmd_export(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
    out = Path(args.dir)
    clash = [name for name in ADAPTER_FILES if (out / name).exists()]
    if clash:
        raise CommandError(f"{out} already holds {', '.join(clash)}; choose an empty directory")
    data = client.download(f"/v1/learning/versions/{args.version}/adapter", progress=not args.json)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():  # only the adapter's regular files, written by name: no path from the tar
            name = Path(member.name).name
            if member.isfile() and name in ADAPTER_FILES:
                (out / name).write_bytes(tar.extractfile(member).read())
                written.append(name)
    result = {"version": args.version, "dir": str(out), "files": sorted(written), "bytes": len(data)}
    return result, f"Wrote version {args.version}'s PEFT adapter to {out} ({', '.join(sorted(written))})."


def cmd_feedback(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
    body: dict[str, Any] = {"response_id": args.response_id, "user_satisfaction": args.score}
    if args.comment:
        body["comment"] = args.comment
    if args.correction:
        body["corrected_response"] = args.correction
    r = client.post("/v1/learning/feedback", body)
    return r, f"Feedback {r['id']} stored; the response's quality score is now {r['quality_score']:.3f}."


def run(args: argparse.Namespace) -> tuple[Any, str]:
    key = args.api_key or os.environ.get("APHRODITE_ADMIN_KEY") or os.environ.get("APHRODITE_API_KEY")
    client = Client(args.url or os.environ.get("APHRODITE_URL") or DEFAULT_URL, key, args.timeout)
    c = args.command
    if c == "status":
        s = client.get("/v1/learning/status")
        return s, status_text(s)
    if c == "versions":
        v = client.get("/v1/learning/versions")
        return v, versions_table(v)
    if c == "rollback":
        r = client.control("rollback", args.version)
        return r, r["message"]
    if c in ("pause", "resume"):
        r = client.control(c)
        return r, r["message"]
    return {"trigger": cmd_trigger, "export": cmd_export, "feedback": cmd_feedback}[c](client, args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aphrodite learning", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help=f"the server (default: $APHRODITE_URL or {DEFAULT_URL})")
    p.add_argument("--api-key", help="bearer key (default: $APHRODITE_ADMIN_KEY, else $APHRODITE_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one HTTP answer")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="serving version, state and counts")
    sub.add_parser("versions", help="kept weight versions with their gate results and signals")
    rb = sub.add_parser("rollback", help="serve kept version N")
    rb.add_argument("version", type=int)
    tr = sub.add_parser("trigger", help="start a learning task now and wait for its verdict")
    tr.add_argument("--no-wait", action="store_true", help="return once the task started")
    tr.add_argument("--wait-s", type=float, default=1800.0, help="give up waiting after this many seconds")
    sub.add_parser("pause", help="hold background learning")
    sub.add_parser("resume", help="resume background learning")
    ex = sub.add_parser("export", help="write version N's PEFT adapter directory into DIR")
    ex.add_argument("version", type=int)
    ex.add_argument("dir")
    fb = sub.add_parser("feedback", help="rate response ID with SCORE in [-1, 1]")
    fb.add_argument("response_id")
    fb.add_argument("score", type=float)
    fb.add_argument("--comment")
    fb.add_argument("--correction", help="what the response should have been")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        body, text = run(args)
    except CommandError as exc:
        print(f"aphrodite learning {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2) if args.json else text)
    return 0
