// The learning console: polls the /v1/learning routes every 2 s and renders them; the buttons post control
// actions. The key typed into the page stays in this tab's sessionStorage and goes out as "Authorization:
// Bearer <key>" to this server only. Every text from the server is set as textContent, never parsed as HTML.
"use strict";
const KEY = "aphrodite.console.key";
const POLL_MS = 2000;
const $ = id => document.getElementById(id);
let current = {status: null, versions: null};

function el(tag, props, ...children) {
  const n = Object.assign(document.createElement(tag), props || {});
  for (const c of children) if (c !== null && c !== undefined) n.append(c);
  return n;
}

function time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }
function num(v, d = 3) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
function mark(ok) { return el("span", {className: ok ? "pass" : "fail", textContent: ok ? "✓ passed" : "✗ failed"}); }

async function api(path, options = {}) {
  const headers = {"Content-Type": "application/json"};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(path, {...options, headers, cache: "no-store"});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error((body.error && body.error.message) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function renderStatus(s) {
  $("serving-version").textContent = s.weight_version;
  const state = $("learning-state");
  state.textContent = s.status;
  state.className = "badge " + s.status;
  $("btn-pause").textContent = s.paused ? "Resume" : "Pause";
  $("btn-pause").dataset.action = s.paused ? "resume" : "pause";
  const canary = s.canary ? " · canary: " + JSON.stringify(s.canary) : "";
  $("notice").textContent = (s.learner_notice || "") + canary;
}

function gateCells(gate) {
  const t = gate.target || {}, f = gate.protected_facts || {}, h = gate.heldout || {};
  if (!gate.target) return [el("td", {textContent: "–"}), el("td", {textContent: "–"}), el("td", {textContent: "–"})];
  const before = t.heldout_before ?? t.train_before, after = t.heldout_after ?? t.train_after;
  const changed = (f.greedy_changed || []).length ? ` · changed: ${f.greedy_changed.join("; ")}` : "";
  return [
    el("td", {className: "gate-target"}, `${num(before)} → ${num(after)} `, mark(t.passed)),
    el("td", {className: "gate-facts"}, `${f.count ?? 0} facts, worst drop ${num(f.worst_logprob_drop, 2)}${changed} `, mark(f.passed)),
    el("td", {className: "gate-heldout"}, `ppl ×${num(h.perplexity_ratio, 4)} (limit ×${num(1 + (h.max_regression || 0), 3)}) `, mark(h.passed)),
  ];
}

function renderVersions(list) {
  const rows = list.data.slice().reverse().map(v => {
    const signals = Object.entries(v.signals || {}).map(([k, n]) => `${k}: ${n}`).join(", ");
    const tr = el("tr", {className: v.serving ? "serving" : ""},
      el("td", {textContent: v.base ? "0 (base)" : String(v.version)}),
      el("td", {textContent: v.parent ?? "–"}), el("td", {textContent: time(v.created)}),
      el("td", {textContent: v.base ? "" : `${signals || "none"} (${v.interactions} interactions)`}),
      ...gateCells(v.gate || {}),
      el("td", {textContent: v.canary ? JSON.stringify(v.canary) : ""}));
    tr.dataset.version = v.version;
    return tr;
  });
  $("versions").tBodies[0].replaceChildren(...rows);
  const select = $("rollback-select"), chosen = select.value;
  const serving = list.data.find(v => v.serving);
  select.replaceChildren(...list.data.filter(v => !v.serving).reverse().map(v =>
    el("option", {value: v.version, textContent: v.base ? "0 (base weights)" : `version ${v.version}`})));
  const parent = serving && serving.parent !== null ? String(serving.parent) : null;
  const has = v => [...select.options].some(o => o.value === v);
  if (select.dataset.chosen && has(chosen)) select.value = chosen;  // the operator's pick stays
  else if (parent && has(parent)) select.value = parent;  // else the serving version's parent
}

function describe(e) {
  if (e.kind === "promoted") return `version ${e.version} promoted (from ${e.parent})`;
  if (e.kind === "refused") return `candidate from version ${e.parent} refused`;
  if (e.kind === "served") return `version ${e.version} serves (was ${e.previous})`;
  if (e.kind === "canary") return `version ${e.version} is a canary beside ${e.parent}`;
  if (e.kind.startsWith("canary ")) return `canary version ${e.version} ${e.kind.slice(7)}`;
  return `${e.kind} ${e.version ?? ""}`;
}

function renderTimeline(list) {
  const items = list.data.slice().reverse().map(e => el("li", {className: "event " + e.kind},
    `${time(e.time)} `, el("span", {className: "badge " + e.kind, textContent: e.kind}), ` ${describe(e)}`,
    e.reason ? ` — ${e.reason}` : "", e.canary ? ` · canary: ${JSON.stringify(e.canary)}` : ""));
  $("timeline").replaceChildren(...items);
  const changes = list.data.filter(e => e.kind !== "refused");
  const steps = changes.map(e => [e.time, e.version]);
  if (changes.length) steps.unshift([changes[0].time - 30, changes[0].previous ?? changes[0].parent ?? 0]);
  const refused = list.data.filter(e => e.kind === "refused").map(e => [e.time, e.parent ?? 0]);
  Plot.chart($("lineage-plot"), {label: "serving version over time", yLabel: "version", xFormat: time, xTime: true, xMinSpan: 120, width: 1100, yInteger: true,
    empty: "no promotions, refusals or rollbacks yet",
    series: [{name: "serving version", color: "#1565c0", kind: "step", points: steps},
             {name: "refused (at parent)", color: "#c62828", kind: "points", points: refused}]});
}

function renderCurves(c) {
  const v = c.versions;
  Plot.chart($("loss-plot"), {label: "loss per version", yLabel: "nats/token", xFormat: x => "v" + x, xInteger: true,
    empty: "no learned versions yet",
    series: [{name: "target (parent)", color: "#90caf9", kind: "line", points: v.filter(p => p.target_before !== null).map(p => [p.version, p.target_before])},
             {name: "target (version)", color: "#1565c0", kind: "line", points: v.filter(p => p.target_after !== null).map(p => [p.version, p.target_after])},
             {name: "held-out", color: "#ef6c00", kind: "line", points: v.filter(p => p.heldout_nll !== null).map(p => [p.version, p.heldout_nll])}]});
  const perMin = 60 / c.bucket_s;
  Plot.chart($("feedback-plot"), {label: "feedback over time", yLabel: "ratings/min", y2Label: "mean rating",
    y2Range: [-1, 1], yZero: true, xFormat: time, xTime: true, xMinSpan: 10 * c.bucket_s, empty: "no feedback in the last hour",
    series: [{name: "ratings/min", color: "#7e57c2", kind: "bars", points: c.feedback.map(b => [b.start + c.bucket_s / 2, b.count * perMin])},
             {name: "mean rating", color: "#2e7d32", kind: "line", axis: "right", points: c.feedback.map(b => [b.start + c.bucket_s / 2, b.mean_rating])}]});
}

function renderInteractions(list) {
  const rows = list.data.map(i => {
    const fb = i.feedback;
    const tr = el("tr", {},
      el("td", {textContent: time(i.created)}), el("td", {textContent: i.interaction_type}),
      el("td", {className: "text", textContent: i.prompt}), el("td", {className: "text", textContent: i.response}),
      el("td", {textContent: i.weight_version}), el("td", {textContent: num(i.quality_score, 2)}),
      el("td", {className: "text", textContent: fb ? `${num(fb.user_satisfaction, 2)}${fb.comment ? " · " + fb.comment : ""}${fb.corrected_response ? " · correction: " + fb.corrected_response : ""}` : ""}));
    tr.dataset.id = i.id;
    return tr;
  });
  $("interactions").tBodies[0].replaceChildren(...rows);
  $("interactions-note").textContent = rows.length ? "" : "no interactions stored yet";
}

async function refresh() {
  const [status, versions, timeline, curves, interactions] = await Promise.allSettled([
    api("/v1/learning/status"), api("/v1/learning/versions"), api("/v1/learning/timeline"),
    api("/v1/learning/curves"), api("/v1/learning/interactions?limit=15")]);
  const failed = [status, versions, timeline, curves].find(r => r.status === "rejected");
  if (status.value) { current.status = status.value; renderStatus(status.value); }
  if (versions.value) { current.versions = versions.value; renderVersions(versions.value); }
  if (timeline.value) renderTimeline(timeline.value);
  if (curves.value) renderCurves(curves.value);
  if (interactions.value) renderInteractions(interactions.value);
  else $("interactions-note").textContent = "Interactions need the admin key (or a loopback client): " + interactions.reason.message;
  if (failed) say(failed.reason.status === 401 || failed.reason.status === 403
    ? `${failed.reason.message} Type the key above.` : `Cannot read the server: ${failed.reason.message}`, true);
  $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  document.body.dataset.serving = current.status ? current.status.weight_version : "";
}

async function act(action, version) {
  try {
    const body = {action};
    if (version !== undefined) body.version = version;
    const r = await api("/v1/learning/control", {method: "POST", body: JSON.stringify(body)});
    say(r.message);
  } catch (e) {
    say(`${action} failed: ${e.message}`, true);
  }
  await refresh();
}

function askRollback() {
  const version = Number($("rollback-select").value);
  if (!$("rollback-select").value) { say("No other kept version to roll back to.", true); return; }
  $("confirm-text").textContent = `Serve version ${version} instead of version ${current.status ? current.status.weight_version : "?"}?`;
  $("confirm").dataset.version = version;
  $("confirm").hidden = false;
}

function setup() {
  $("key-input").value = sessionStorage.getItem(KEY) || "";
  $("key-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
    say(key ? "Key kept for this tab." : "No key.");
    refresh();
  });
  $("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); $("key-input").value = ""; say("Key forgotten."); refresh(); });
  $("btn-trigger").addEventListener("click", () => act("trigger"));
  $("btn-pause").addEventListener("click", ev => act(ev.target.dataset.action || "pause"));
  $("btn-rollback").addEventListener("click", askRollback);
  $("rollback-select").addEventListener("change", ev => { ev.target.dataset.chosen = "1"; });
  $("confirm-no").addEventListener("click", () => { $("confirm").hidden = true; });
  $("confirm-yes").addEventListener("click", () => { $("confirm").hidden = true; act("rollback", Number($("confirm").dataset.version)); });
  refresh();
  setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", setup);
