// The drover dashboard: plain JavaScript over the typed /api/v1 endpoints
// (the same the CLI uses). Everything user-supplied is put in the page as
// text nodes, never as HTML; the Content-Security-Policy forbids inline
// script. The token lives in sessionStorage.

const TOKEN_KEY = "drover-token";
const API_TIMEOUT_MS = 10000;
const main = document.getElementById("main");
let me = { name: "anonymous", role: null, auth: false };
let timer = null;
// Bumped on every navigation: a page whose data arrives after the person
// moved on draws nothing.
let navigation = 0;

// ---- building the page, safely --------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    // Through the CSSOM: the CSP refuses style attributes.
    else if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// Replaces the page's content; absent parts (null, false) are left out.
function render(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

// `render` for a page loaded at navigation `nav`: nothing if the person
// has moved on since (its data came late).
function renderAt(nav, ...nodes) {
  if (nav !== navigation) return false;
  render(...nodes);
  return true;
}

function table(headers, rows) {
  return el("div", { class: "scroll" },
    el("table", {},
      // A column of buttons or boxes has no visible heading; readers get one.
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h === "" ? el("span", { class: "sr-only" }, "actions") : h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "nothing")))));
}

function card(label, value, cls, title) {
  return el("div", { class: "card", title }, el("div", { class: "n " + (cls || "") }, value), el("div", { class: "l" }, label));
}

function toast(text, bad) {
  const t = el("div", { class: bad ? "bad" : "" }, text);
  document.getElementById("toast").append(t);
  setTimeout(() => t.remove(), 5000);
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return `${s.toFixed(0)}s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

// ---- the API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    // The API's errors are {"error": {"code", "message"}}; say its words.
    super((body && ((body.error && body.error.message) || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", body, reason } = {}) {
  const headers = { accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  if (reason) headers["x-drover-reason"] = reason;
  // A node that hangs answers nothing: after a while that is an error too.
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), API_TIMEOUT_MS);
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: abort.signal });
  } catch (e) {
    throw new Error(abort.signal.aborted ? `the node did not answer within ${API_TIMEOUT_MS / 1000} s` : `the node could not be reached (${e.message})`);
  } finally {
    clearTimeout(timeout);
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (r.status === 401) {
    const e = new ApiError(401, data);
    showLogin(token ? `The node refused this token: ${e.message}` : e.message);
    throw e;
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function canOperate() {
  return !me.auth || me.role === "operate" || me.role === "admin";
}

// An action button: only for tokens that may act (the server refuses the
// others anyway). `confirmText` asks first; `askReason` asks why, and the
// answer goes to the audit log (`fn` gets it; nothing is done without
// one). Done, the page redraws.
function action(label, fn, { danger, confirmText, askReason } = {}) {
  if (!canOperate()) return null;
  return el("button", {
    class: danger ? "danger" : "",
    "data-action": label,
    onclick: async (ev) => {
      ev.preventDefault();
      let reason = "dashboard";
      if (askReason) {
        const said = window.prompt(`${askReason}\n\nWhy? (goes to the audit log)`);
        if (said === null) return;
        if (!said.trim()) { toast(`${label}: a reason is needed`, true); return; }
        reason = said.trim();
      } else if (confirmText && !window.confirm(confirmText)) return;
      try { await fn(reason); toast(`${label}: done`); route(); } catch (e) { toast(`${label}: ${e.message}`, true); }
    },
  }, label);
}

// A duration in ms as people read it: 850 ms, 12 s, 4 min, 2.5 h, 3 d.
function dur(ms) {
  if (ms === null || ms === undefined) return "-";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// A policy value in words: objects as "key value, key value".
function readable(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "object") return String(v);
  return Object.entries(v).filter(([, x]) => x !== null && x !== undefined)
    .map(([k, x]) => `${k.replaceAll("_", " ")} ${readable(x)}`).join(", ") || "-";
}

// Pause, drain and resume of a queue: each asks why.
function queueActions(q) {
  const post = (what) => (reason) => api(`/api/v1/queues/${encodeURIComponent(q.name)}/${what}`, { method: "POST", reason });
  return q.paused || q.draining
    ? action("resume", post("resume"), { askReason: `Resume queue ${q.name}?` })
    : [action("pause", post("pause"), { askReason: `Pause queue ${q.name}? Its jobs wait; enqueues go on.` }), " ",
      action("drain", post("drain"), { danger: true, askReason: `Drain queue ${q.name}? New jobs are refused; leases go on.` })];
}

// ---- login --------------------------------------------------------------------

function showLogin(message) {
  clearInterval(timer);
  navigation++;
  const input = el("input", { type: "password", id: "token", placeholder: "drv_…", autocomplete: "off" });
  render(el("form", {
    class: "login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      if (await whoami()) route();
    },
  },
  el("h1", {}, "Sign in"),
  el("p", { class: "muted" }, message || "This node wants a token (drover token new prints one)."),
  input,
  el("button", { type: "submit" }, "Sign in")));
}

// Who the token is; false when it is refused (the sign-in form is shown).
async function whoami() {
  try { me = await api("/api/v1/whoami"); } catch { return false; }
  const who = document.getElementById("who");
  who.replaceChildren(me.auth ? `${me.name} (${me.role})` : "no tokens: open node",
    me.auth ? el("button", { onclick: () => { sessionStorage.removeItem(TOKEN_KEY); who.replaceChildren(); me = { name: "anonymous", role: null, auth: false }; showLogin(); }, style: "margin-left:.5rem" }, "Sign out") : null);
  return true;
}

// ---- pages ----------------------------------------------------------------------

// The overview chart's range: "1h" or "24h" (the server keeps both).
let chartRange = "1h";

// Draws the server's history (GET /api/v1/history): one line per rate, a
// time axis under it, the highest rate on the left.
function drawChart(canvas, history) {
  const ctx = canvas.getContext("2d");
  const dpr = devicePixelRatio;
  const w = (canvas.width = canvas.clientWidth * dpr);
  const h = (canvas.height = canvas.clientHeight * dpr);
  ctx.clearRect(0, 0, w, h);
  const points = history.points;
  if (points.length < 2) return;
  const axis = 16 * dpr;
  const plot = h - axis;
  const series = [["enqueued_per_sec", "#2563eb"], ["completed_per_sec", "#15803d"], ["failed_per_sec", "#b91c1c"]];
  const max = Math.max(1, ...points.flatMap((p) => series.map(([k]) => p[k])));
  const x = (i) => (i / (points.length - 1)) * (w - 2 * dpr) + dpr;
  for (const [k, color] of series) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2 * dpr;
    ctx.beginPath();
    points.forEach((p, i) => {
      const y = plot - (p[k] / max) * (plot - 10 * dpr) - 2 * dpr;
      if (i === 0) ctx.moveTo(x(i), y); else ctx.lineTo(x(i), y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#4b5563";
  ctx.font = `${11 * dpr}px system-ui`;
  ctx.fillText(`${max.toFixed(1)}/s`, 4 * dpr, 12 * dpr);
  // Five ticks: local clock times, the last one "now".
  ctx.strokeStyle = "#d1d5db";
  ctx.lineWidth = dpr;
  ctx.beginPath(); ctx.moveTo(0, plot); ctx.lineTo(w, plot); ctx.stroke();
  for (let t = 0; t <= 4; t++) {
    const i = Math.round((t / 4) * (points.length - 1));
    const label = t === 4 ? "now" : new Date(points[i].at_ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    ctx.textAlign = t === 0 ? "left" : t === 4 ? "right" : "center";
    ctx.fillText(label, x(i), h - 3 * dpr);
  }
  ctx.textAlign = "left";
}

async function overview() {
  const nav = navigation;
  const [stats, members, breakers, runs, workers, { queues: qs }, history] = await Promise.all([
    api("/api/v1/stats"), api("/api/v1/cluster/members"), api("/api/v1/breakers"),
    api("/api/v1/runs"), api("/api/v1/workers"), api("/api/v1/queues"),
    api(`/api/v1/history?range=${chartRange}`),
  ]);
  // A refresh that was on its way when the person moved on, or picked
  // another range, draws nothing.
  if (nav !== navigation || history.range !== chartRange) return;
  const slaMissed = qs.reduce((n, q) => n + (q.sla_missed || 0), 0);
  const t = stats.totals;
  const queues = Object.entries(stats.queues);
  const ready = queues.reduce((n, [, q]) => n + q.ready.reduce((a, b) => a + b, 0), 0);
  const held = workers.workers.reduce((n, w) => n + w.in_flight, 0);
  const capacity = workers.workers.reduce((n, w) => n + w.capacity, 0);
  const open = breakers.breakers.filter((b) => b.state !== "closed").length;
  const overBudget = runs.runs.filter((r) => r.budget.state === "held").length;
  // Counters start again when a node restarts: they say since when.
  const since = `since node ${history.node_id} started, ${when(history.since_ms)}`;
  const from = new Date(history.since_ms).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  const canvas = el("canvas", { id: "rates", role: "img", "aria-label": `jobs per second over the last ${history.range === "1h" ? "hour" : "day"}` });
  const pick = (r) => el("button", {
    "data-range": r, class: r === chartRange ? "active" : "", "aria-pressed": r === chartRange ? "true" : "false",
    onclick: () => { chartRange = r; overview().catch(() => {}); },
  }, r === "1h" ? "last hour" : "last day");
  renderAt(nav, 
    el("h1", {}, "Overview"),
    el("div", { class: "cards", id: "cards" },
      card("leader", members.leader_id ? `node ${members.leader_id}` : "none", members.leader_id ? "" : "bad"),
      card("term", members.term),
      card("members", members.members.length),
      card("ready jobs", ready),
      card(`enqueued since ${from}`, t.enqueued, "", since),
      card(`completed since ${from}`, t.completed, "ok", since),
      card(`failed since ${from}`, t.failed, t.failed ? "bad" : "", since),
      card("workers", workers.workers.length),
      card("utilization", capacity ? `${Math.round((100 * held) / capacity)}%` : "-"),
      card("SLA misses", slaMissed, slaMissed ? "bad" : ""),
      card("breakers open", open, open ? "bad" : ""),
      card("runs over budget", overBudget, overBudget ? "bad" : "")),
    el("h2", {}, "Per second: ", el("span", { style: "color:#2563eb" }, "enqueued "), el("span", { style: "color:#15803d" }, "completed "), el("span", { style: "color:#b91c1c" }, "failed"), " ", pick("1h"), " ", pick("24h")),
    canvas,
    el("p", { class: "muted", id: "chart-note" }, `${history.bucket_seconds} s buckets, kept by node ${history.node_id} since ${when(history.since_ms)}`),
    el("h2", {}, "Members"),
    table(["id", "address", "voter", "match index", "reachable"], members.members.map((m) =>
      el("tr", {}, el("td", {}, m.id, m.id === members.leader_id ? " (leader)" : ""), el("td", {}, m.addr), el("td", {}, m.voter ? "yes" : "no"), el("td", {}, m.match_index), el("td", { class: m.reachable ? "ok" : "bad" }, m.reachable ? "yes" : "no")))),
    el("h2", {}, "Pending by queue and priority"),
    table(["queue", "p1", "p2", "p3", "p4", "p5", "scheduled", "leased"], queues.map(([name, q]) =>
      el("tr", {}, el("td", {}, el("a", { href: `#/jobs?queue=${encodeURIComponent(name)}` }, name)), q.ready.map((n) => el("td", {}, n)), el("td", {}, q.scheduled), el("td", {}, q.leased)))),
  );
  drawChart(canvas, history);
}

async function queuesPage() {
  const nav = navigation;
  const { queues } = await api("/api/v1/queues");
  renderAt(nav, 
    el("h1", {}, "Queues"),
    table(["queue", "state", "ready (p1–p5)", "runnable", "blocked", "oldest ready", "scheduled", "leased", "waiting", "succeeded", "dead", "sla missed", "limits", ""], queues.map((q) =>
      el("tr", { "data-queue": q.name },
        el("td", {}, el("a", { href: `#/queue/${encodeURIComponent(q.name)}` }, q.name)),
        el("td", {}, q.paused ? el("span", { class: "tag paused" }, "paused") : q.draining ? el("span", { class: "tag draining" }, "draining") : el("span", { class: "tag" }, "running")),
        el("td", { class: "nowrap" }, q.ready.join(" / ")),
        el("td", {}, q.runnable ?? "-"),
        blockedCell(q.blocked || {}),
        el("td", { class: "muted" }, q.oldest_ready_at_ms ? ago(q.oldest_ready_at_ms).replace(" ago", "") : "-"),
        el("td", {}, q.scheduled), el("td", {}, q.leased), el("td", {}, q.waiting || 0),
        el("td", {}, q.succeeded), el("td", {}, q.dead), el("td", { class: q.sla_missed ? "bad" : "" }, q.sla_missed),
        el("td", { class: "muted" }, Object.entries(q.policy || {}).map(([k, v]) => `${k.replaceAll("_", " ")}: ${readable(v)}`).join("; ")),
        el("td", {}, queueActions(q))))),
  );
}

// One queue: its numbers, what holds its jobs and what releases it, its
// history, workers, breakers, recent failures and policy.
async function queuePage(name) {
  const nav = navigation;
  const q = encodeURIComponent(name);
  const [{ queues }, why, history, workers, { breakers }, dead] = await Promise.all([
    api("/api/v1/queues"),
    // A queue with no jobs has nothing to say why about.
    api(`/api/v1/queues/${q}/why`).catch((e) => { if (e.status === 404) return null; throw e; }),
    api(`/api/v1/queues/${q}/history?range=${chartRange}`).catch((e) => { if (e.status === 404) return null; throw e; }),
    api("/api/v1/workers"), api("/api/v1/breakers"), api(`/api/v1/dead?queue=${q}&limit=10`),
  ]);
  if (nav !== navigation) return;
  const s = queues.find((x) => x.name === name);
  if (!s) { renderAt(nav, el("h1", {}, `Queue ${name}`), el("p", { class: "bad" }, "No such queue on this cluster: the Queues page lists them.")); return; }
  const latest = (k) => [...((history && history.points) || [])].reverse().find((p) => p[k]);
  const wait = latest("wait_ms");
  const run = latest("run_ms");
  const pct = (t) => (t ? `${dur(t.p50)} / ${dur(t.p95)} / ${dur(t.p99)}` : "-");
  const serving = workers.workers.filter((w) => w.queues.includes(name));
  const canvas = el("canvas", { id: "rates", role: "img", "aria-label": `jobs of ${name} per second` });
  const blockedTotal = Object.values(s.blocked || {}).reduce((a, b) => a + b, 0);
  renderAt(nav, 
    el("h1", {}, `Queue ${name} `, s.paused ? el("span", { class: "tag paused" }, "paused") : s.draining ? el("span", { class: "tag draining" }, "draining") : el("span", { class: "tag" }, "running")),
    el("div", {}, queueActions(s), " ", el("a", { href: `#/jobs?queue=${q}` }, "its jobs")),
    el("div", { class: "cards", id: "queue-cards" },
      card("ready", s.ready.reduce((a, b) => a + b, 0)),
      card("runnable", s.runnable ?? "-", "ok"),
      card("blocked", blockedTotal, blockedTotal ? "bad" : ""),
      card("leased", s.leased),
      card("scheduled", s.scheduled),
      card("waiting on dependencies", s.waiting || 0),
      card("oldest ready", s.oldest_ready_at_ms ? ago(s.oldest_ready_at_ms).replace(" ago", "") : "-"),
      card("workers taking leases", why && why.workers !== undefined ? why.workers : serving.length),
      card("wait p50/p95/p99", pct(wait && wait.wait_ms)),
      card("run p50/p95/p99", pct(run && run.run_ms))),
    el("h2", {}, "Held back"),
    why && why.blocked.length
      ? table(["reason", "jobs", "scope", "release"], why.blocked.map((b) =>
        el("tr", { "data-reason": b.reason }, el("td", { class: "bad" }, b.reason.replaceAll("_", " ")), el("td", {}, b.jobs), el("td", {}, b.scope || "-"), el("td", {}, el("code", {}, b.release)))))
      : el("p", { class: "muted", id: "held-none" }, "Nothing holds its ready jobs back."),
    ...((why && why.notes) || []).map((n) => el("p", { class: "muted" }, n)),
    el("h2", {}, "Per second: ", el("span", { style: "color:#2563eb" }, "enqueued "), el("span", { style: "color:#15803d" }, "completed "), el("span", { style: "color:#b91c1c" }, "failed")),
    canvas,
    el("p", { class: "muted" }, history ? `${history.bucket_seconds} s buckets, kept by node ${history.node_id} since ${when(history.since_ms)}` : "no history on this node yet"),
    el("h2", {}, "Workers"),
    table(["worker", "node", "version", "held / capacity", "state"], serving.map((w) =>
      el("tr", {}, el("td", {}, w.worker_id), el("td", {}, w.node_id), el("td", {}, w.version || "-"), el("td", {}, `${w.in_flight} / ${w.capacity}`),
        el("td", { class: w.draining || w.quarantined_until_ms ? "bad" : "ok" }, w.quarantined_until_ms ? "quarantined" : w.draining ? "draining" : "taking leases")))),
    el("h2", {}, "Breakers"),
    table(["tenant", "class", "state", "failures", "opened"], breakers.filter((b) => b.queue === name).map((b) =>
      el("tr", {}, el("td", {}, b.tenant), el("td", {}, b.class), el("td", {}, el("span", { class: `tag ${b.state.replace("-", "_")}` }, b.state)), el("td", {}, b.failures), el("td", { class: "muted" }, b.opened_at_ms ? ago(b.opened_at_ms) : "never")))),
    el("h2", {}, "Recent failures"),
    jobsTable(dead.jobs || [], false),
    el("h2", {}, "Policy"),
    el("dl", { class: "policy" }, Object.entries(s.policy || {}).map(([k, v]) => [el("dt", {}, k.replaceAll("_", " ")), el("dd", {}, readable(v))])),
  );
  if (history) drawChart(canvas, history);
}

// The order a job is counted in, under the first reason that holds it.
const BLOCK_REASONS = ["paused", "tenant_paused", "breaker", "daily_cap", "budget", "key_limit", "concurrency_limit", "version", "no_workers"];

function blockedCell(blocked) {
  const held = Object.entries(blocked).filter(([, n]) => n > 0)
    .sort(([a], [b]) => BLOCK_REASONS.indexOf(a) - BLOCK_REASONS.indexOf(b));
  const total = held.reduce((sum, [, n]) => sum + n, 0);
  if (!total) return el("td", { class: "blocked muted" }, "0");
  return el("td", { class: "blocked bad", title: "drover queues why QUEUE says what holds them and how to release them" },
    held.length > 1 ? `${total}: ` : "", held.map(([r, n]) => `${n} ${r.replaceAll("_", " ")}`).join(", "));
}

function params() {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}

async function jobsPage() {
  const nav = navigation;
  const p = params();
  const field = (name, label, opts) => el("label", {}, label, opts
    ? el("select", { name }, opts.map((o) => el("option", { value: o, selected: p.get(name) === o }, o || "any")))
    : el("input", { name, value: p.get(name) || "", size: 12 }));
  const form = el("form", {
    class: "row",
    onsubmit: (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      if (f.get("id")) { location.hash = `#/job/${encodeURIComponent(f.get("id"))}`; return; }
      const q = new URLSearchParams();
      for (const [k, v] of f.entries()) if (v) q.set(k, v);
      location.hash = `#/jobs?${q}`;
    },
  }, field("id", "job id"), field("queue", "queue"), field("tenant", "tenant"), field("run", "run"),
  field("state", "state", ["", "scheduled", "ready", "waiting", "leased", "succeeded", "dead", "cancelled"]),
  field("type", "type"), field("class", "error class"), field("older_than", "in its state over (1h)"),
  field("key", "idempotency key"), el("button", { type: "submit" }, "Search"));
  renderAt(nav, el("h1", {}, "Jobs"), form);
  if (p.get("key")) {
    if (!p.get("queue")) { main.append(el("p", { class: "bad" }, "An idempotency key is looked up within a queue: give the queue too.")); return; }
    const tenant = p.get("tenant") ? `?tenant=${encodeURIComponent(p.get("tenant"))}` : "";
    const job = await api(`/api/v1/queues/${encodeURIComponent(p.get("queue"))}/jobs/by-key/${encodeURIComponent(p.get("key"))}${tenant}`);
    location.hash = `#/job/${job.id}`;
    return;
  }
  const q = new URLSearchParams();
  for (const k of ["queue", "tenant", "run", "state", "type", "class", "older_than", "after"]) if (p.get(k)) q.set(k, p.get(k));
  q.set("limit", "100");
  q.set("order", "newest");
  let page;
  try {
    page = await api(`/api/v1/jobs?${q}`);
  } catch (e) {
    // The search stays as typed, with the node's reason under it.
    if (nav === navigation) main.append(el("p", { class: "bad", id: "search-error" }, `Search refused: ${e.message}`));
    return;
  }
  if (nav !== navigation) return;
  const next = new URLSearchParams(p);
  if (page.next) next.set("after", page.next);
  main.append(
    el("p", { class: "muted" }, "Newest first."),
    jobsTable(page.jobs),
    el("p", {}, p.get("after") ? el("a", { href: "#/jobs?" + new URLSearchParams([...p].filter(([k]) => k !== "after")) }, "first page") : null,
      p.get("after") && page.next ? " · " : null,
      page.next ? el("a", { href: `#/jobs?${next}`, id: "next-page" }, "next page") : null));
}

function jobsTable(jobs, select) {
  return table([select ? "" : null, "id", "queue", "type", "tenant", "run", "state", "attempts", "error", "since"].filter((h) => h !== null), jobs.map((j) =>
    el("tr", {},
      select ? el("td", {}, el("input", { type: "checkbox", value: j.id, "aria-label": `select ${j.id}` })) : null,
      el("td", {}, el("a", { href: `#/job/${j.id}` }, j.id)), el("td", {}, j.queue), el("td", {}, j.type), el("td", {}, j.tenant), el("td", {}, j.run_id),
      el("td", {}, el("span", { class: `tag ${j.state}` }, j.state)), el("td", {}, j.attempts),
      el("td", { class: "bad" }, j.last_error_class ? `${j.last_error_class}: ${j.last_error}` : ""), el("td", { class: "muted" }, ago(j.state_since_ms)))));
}

const PREVIEW = 4096;

// A payload as the page shows it: text (escaped by being a text node), or
// hex when the node sent it as base64 (not UTF-8); at most PREVIEW bytes.
function preview(text, base64) {
  if (text) {
    return el("pre", { class: "payload" }, text.length > PREVIEW ? `${text.slice(0, PREVIEW)}… (${text.length} characters)` : text);
  }
  if (base64) {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const hex = Array.from(bytes.slice(0, PREVIEW / 4), (b) => b.toString(16).padStart(2, "0")).join(" ");
    return el("pre", { class: "payload" }, `${hex}${bytes.length > PREVIEW / 4 ? ` … (${bytes.length} bytes)` : ""}`);
  }
  return el("p", { class: "muted" }, "empty");
}

async function jobPage(id) {
  const nav = navigation;
  const j = await api(`/api/v1/jobs/${encodeURIComponent(id)}`);
  const finished = ["succeeded", "dead", "cancelled"].includes(j.state);
  renderAt(nav, 
    el("h1", {}, `Job ${j.id} `, el("span", { class: `tag ${j.state}` }, j.state)),
    el("div", {},
      !finished ? action("cancel", (reason) => api(`/api/v1/jobs/${j.id}/cancel`, { method: "POST", reason }), { danger: true, askReason: `Cancel job ${j.id}? It will not run.` }) : null,
      j.state === "dead" ? action("replay", () => api(`/api/v1/dead/${j.id}/replay`, { method: "POST", reason: "dashboard" })) : null),
    el("div", { class: "cards" },
      card("queue", j.queue), card("type", j.job_type), card("tenant", j.tenant), card("run", j.run_id || "-"),
      card("priority", j.priority), card("attempts", j.attempts), card("cost (USD)", `$${(j.cost_usd || 0).toFixed(4)}`),
      card("enqueued", ago(j.enqueued_at_ms), "", when(j.enqueued_at_ms)),
      j.state === "scheduled" ? card("runs at", j.run_at_ms > Date.now() ? `in ${dur(j.run_at_ms - Date.now())}` : "now", "", when(j.run_at_ms)) : null,
      j.finished_at_ms ? card("finished", ago(j.finished_at_ms), "", when(j.finished_at_ms)) : null,
      j.progress ? card("progress", `${Math.round(100 * (j.progress.fraction || 0))}% ${j.progress.message || ""}`) : null),
    j.last_error_class ? el("p", { class: "bad" }, `${j.last_error_class}: ${j.last_error}`) : null,
    (j.after || []).length ? el("p", { id: "after" }, `Runs after ${j.after.length === 1 ? "job" : "jobs"} `, j.after.map((id, i) => [i ? ", " : "", el("a", { href: `#/job/${id}` }, id)]),
      j.state === "waiting" ? " (waiting for them to succeed)" : "") : null,
    (j.blocked || []).length ? [
      el("h2", {}, "Held back by"),
      table(["reason", "scope", "why", "release"], j.blocked.map((b) =>
        el("tr", { "data-reason": b.reason }, el("td", { class: "bad" }, b.reason.replaceAll("_", " ")), el("td", {}, b.scope || "-"), el("td", {}, b.detail || ""), el("td", {}, el("code", {}, b.release))))),
    ] : null,
    el("h2", {}, "Payload"), preview(j.payload, j.payload_base64),
    el("h2", {}, "Result"), preview(j.result, j.result_base64),
    el("h2", {}, "Timeline"),
    table(["at", "event", "worker", "attempt", "error class"], (j.events || []).map((e) =>
      el("tr", {}, el("td", { class: "muted" }, when(e.at_ms)), el("td", {}, e.what), el("td", {}, e.worker || ""), el("td", {}, e.attempt || ""), el("td", { class: "bad" }, e.error_class || "")))),
  );
}

async function deadPage() {
  const nav = navigation;
  const p = params();
  const q = new URLSearchParams();
  for (const k of ["queue", "class"]) if (p.get(k)) q.set(k, p.get(k));
  const page = await api(`/api/v1/dead?${q}`);
  const filter = {};
  if (p.get("queue")) filter.queue = p.get("queue");
  if (p.get("class")) filter.class = p.get("class");
  const list = jobsTable(page.jobs, canOperate());
  // How many a replay of all that match touches, said before it is done.
  const matching = page.counts
    .filter((c) => (!filter.queue || c.queue === filter.queue) && (!filter.class || c.class === filter.class))
    .reduce((n, c) => n + c.count, 0);
  renderAt(nav, 
    el("h1", {}, "Dead letters"),
    table(["queue", "error class", "count", ""], page.counts.map((c) =>
      el("tr", {}, el("td", {}, c.queue), el("td", {}, c.class), el("td", {}, c.count),
        el("td", {}, el("a", { href: `#/dead?queue=${encodeURIComponent(c.queue)}&class=${encodeURIComponent(c.class)}` }, "show"))))),
    el("h2", {}, p.get("queue") || p.get("class") ? `Dead jobs of ${p.get("queue") || "any queue"} / ${p.get("class") || "any class"}` : "Dead jobs"),
    el("div", { style: "margin-bottom:.5rem" },
      action("replay selected", async () => {
        const ids = [...list.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
        if (!ids.length) throw new Error("select some jobs first");
        for (const id of ids) await api(`/api/v1/dead/${id}/replay`, { method: "POST", reason: "dashboard" });
      }),
      " ",
      action(`replay all ${matching} matching`, (reason) => api("/api/v1/dead/replay", { method: "POST", body: filter, reason }), { askReason: `Replay the ${matching} dead jobs of ${filter.queue || "every queue"} / ${filter.class || "every class"}?` })),
    list,
  );
}

async function workersPage() {
  const nav = navigation;
  const w = await api("/api/v1/workers");
  renderAt(nav, 
    el("h1", {}, "Workers"),
    el("div", { style: "margin-bottom:.5rem" }, action("shut all down", (reason) => api("/api/v1/workers/shutdown", { method: "POST", reason }), { danger: true, askReason: `Ask all ${w.workers.length} workers to finish what they hold and stop?` })),
    table(["worker", "node", "version", "queues", "held / capacity", "completed", "failed", "last heard", ""], w.workers.map((x) =>
      el("tr", {}, el("td", {}, x.worker_id), el("td", {}, x.node_id), el("td", {}, x.version || "-"), el("td", {}, x.queues.join(", ")),
        el("td", {}, `${x.in_flight} / ${x.capacity}`), el("td", {}, x.completed), el("td", {}, x.failed), el("td", { class: "muted" }, ago(x.last_seen_ms)),
        el("td", {}, action("shut down", (reason) => api(`/api/v1/workers/${encodeURIComponent(x.worker_id)}/shutdown`, { method: "POST", reason }), { danger: true, askReason: `Ask worker ${x.worker_id} to finish what it holds and stop?` }))))),
    Object.keys(w.unreachable || {}).length ? el("p", { class: "bad" }, `Not answering: ${Object.entries(w.unreachable).map(([k, v]) => `${k} (${v})`).join(", ")}`) : null,
  );
}

async function runsPage() {
  const nav = navigation;
  const [{ breakers }, { runs }] = await Promise.all([api("/api/v1/breakers"), api("/api/v1/runs")]);
  const reset = (b) => (reason) => api("/api/v1/breakers/reset", { method: "POST", body: { queue: b.queue, tenant: b.tenant, class: b.class }, reason });
  renderAt(nav, 
    el("h1", {}, "Breakers"),
    table(["queue", "tenant", "class", "state", "failures", "opened", "cooldown ends", ""], breakers.map((b) =>
      el("tr", { "data-breaker": `${b.queue}/${b.tenant}/${b.class}` }, el("td", {}, el("a", { href: `#/queue/${encodeURIComponent(b.queue)}` }, b.queue)), el("td", {}, b.tenant), el("td", {}, b.class), el("td", {}, el("span", { class: `tag ${b.state.replace("-", "_")}` }, b.state)),
        // Open, it counts nothing: it opened at its threshold.
        el("td", {}, b.state === "closed" ? `${b.failures}${b.threshold ? ` of ${b.threshold}` : ""} in its window` : `opened at ${b.threshold || "its threshold"}`),
        el("td", { class: "muted", title: when(b.opened_at_ms) }, b.opened_at_ms ? ago(b.opened_at_ms) : "never"),
        el("td", { class: "muted", title: when(b.cooldown_until_ms) }, b.state === "open" && b.cooldown_until_ms ? (b.cooldown_until_ms > Date.now() ? `in ${dur(b.cooldown_until_ms - Date.now())}` : "now: a probe goes through") : "-"), el("td", {}, b.state !== "closed" ? action("reset", reset(b), { askReason: `Close breaker ${b.queue}/${b.tenant}/${b.class}? Its jobs are leased again.` }) : null)))),
    el("h1", {}, "Runs"),
    table(["tenant", "run", "state", "jobs", "cost", "budgets", ""], runs.map((r) =>
      el("tr", {}, el("td", {}, r.tenant), el("td", {}, el("a", { href: `#/run/${encodeURIComponent(r.tenant)}/${encodeURIComponent(r.run)}` }, r.run)),
        el("td", {}, el("span", { class: `tag ${r.budget.state}` }, r.budget.state), r.budget.held_by ? ` by ${r.budget.held_by}` : ""),
        el("td", {}, `${r.jobs.succeeded}/${r.jobs.enqueued} done, ${r.jobs.dead} dead`),
        el("td", {}, `$${r.budget.cost_usd.toFixed(4)}`),
        el("td", {}, r.budget.budgets.map((u) => `${u.budget} ${u.used}/${u.limit}`).join(", ") || "-"),
        el("td", {}, r.budget.state === "held" ? overrideForm(r) : null)))),
  );
}

// Raising a held run's budget needs a reason (audited).
function overrideForm(r) {
  if (!canOperate()) return null;
  const reason = el("input", { name: "reason", placeholder: "reason (required)", required: true, size: 16 });
  const cost = el("input", { name: "cost_usd", placeholder: "cost_usd", size: 6 });
  return el("form", {
    class: "row",
    onsubmit: async (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) { toast("an override needs a reason", true); return; }
      const body = { tenant: r.tenant, reason: reason.value.trim() };
      if (cost.value) body.cost_usd = Number(cost.value);
      try { await api(`/api/v1/runs/${encodeURIComponent(r.run)}/override`, { method: "POST", body, reason: reason.value.trim() }); toast("override: done"); route(); } catch (e) { toast(`override: ${e.message}`, true); }
    },
  }, reason, cost, el("button", { type: "submit", "data-action": "override" }, "override"));
}

// Tenants: ready jobs, weight and fair share, pause and drain.
async function tenantsPage() {
  const nav = navigation;
  const { tenants } = await api("/api/v1/tenants");
  const weights = tenants.reduce((n, t) => n + t.weight, 0);
  const post = (t, what) => (reason) => api(`/api/v1/tenants/${encodeURIComponent(t.name)}/${what}`, { method: "POST", reason });
  renderAt(nav, 
    el("h1", {}, "Tenants"),
    table(["tenant", "state", "ready", "weight", "fair share", ""], tenants.map((t) =>
      el("tr", { "data-tenant": t.name }, el("td", {}, el("a", { href: `#/jobs?tenant=${encodeURIComponent(t.name)}` }, t.name)),
        el("td", {}, t.paused ? el("span", { class: "tag paused" }, "paused") : t.draining ? el("span", { class: "tag draining" }, "draining") : el("span", { class: "tag" }, "running")),
        el("td", {}, t.ready), el("td", {}, t.weight), el("td", {}, weights ? `${Math.round((100 * t.weight) / weights)}%` : "-"),
        el("td", {}, t.paused || t.draining
          ? action("resume", post(t, "resume"), { askReason: `Resume tenant ${t.name}?` })
          : [action("pause", post(t, "pause"), { askReason: `Pause tenant ${t.name}? Its jobs wait in every queue.` }), " ",
            action("drain", post(t, "drain"), { danger: true, askReason: `Drain tenant ${t.name}? Its new jobs are refused.` })])))),
    el("p", { class: "muted" }, "A tenant's fair share is its weight over the weights of the tenants listed, among those with ready jobs in a queue."),
  );
}

// Recurring jobs: last and next slot, pause, resume, trigger now.
async function schedulesPage() {
  const nav = navigation;
  const { schedules } = await api("/api/v1/schedules");
  const post = (x, what) => (reason) => api(`/api/v1/schedules/${encodeURIComponent(x.name)}/${what}`, { method: "POST", reason });
  renderAt(nav, 
    el("h1", {}, "Schedules"),
    table(["schedule", "cron", "queue", "state", "last", "next", "fired", ""], schedules.map((x) =>
      el("tr", { "data-schedule": x.name }, el("td", {}, x.name), el("td", {}, el("code", {}, x.cron), ` ${x.timezone}`), el("td", {}, x.queue),
        el("td", {}, x.paused ? el("span", { class: "tag paused" }, "paused") : el("span", { class: "tag" }, "running")),
        el("td", { class: "muted", title: when(x.last_slot_ms) }, x.last_slot_ms ? ago(x.last_slot_ms) : "never"),
        el("td", { class: "muted", title: when(x.next_slot_ms) }, x.next_slot_ms ? `in ${dur(x.next_slot_ms - Date.now())}` : "-"),
        el("td", {}, x.fired),
        el("td", {}, x.paused ? action("resume", post(x, "resume"), { askReason: `Resume schedule ${x.name}?` }) : action("pause", post(x, "pause"), { askReason: `Pause schedule ${x.name}? Its slots are skipped.` }),
          " ", action("trigger", post(x, "trigger"), { askReason: `Enqueue schedule ${x.name}'s job now?` }))))),
  );
}

// The audit log, newest first, a page at a time, filtered on the page by
// action, actor and age.
async function auditPage() {
  const nav = navigation;
  const p = params();
  const q = new URLSearchParams({ limit: "200" });
  if (p.get("before")) q.set("before", p.get("before"));
  const page = await api(`/api/v1/audit?${q}`);
  const since = p.get("within") ? Date.now() - Number(p.get("within")) * 3600000 : 0;
  const rows = page.records.filter((r) =>
    (!p.get("action") || r.action.includes(p.get("action"))) && (!p.get("actor") || r.who.includes(p.get("actor"))) && r.at_ms >= since);
  const form = el("form", {
    class: "row",
    onsubmit: (ev) => {
      ev.preventDefault();
      const f = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (v) f.set(k, v);
      location.hash = `#/audit?${f}`;
    },
  },
  el("label", {}, "action ", el("input", { name: "action", value: p.get("action") || "", size: 14 })),
  el("label", {}, "actor ", el("input", { name: "actor", value: p.get("actor") || "", size: 12 })),
  el("label", {}, "within ", el("select", { name: "within" }, [["", "any time"], ["1", "1 hour"], ["24", "1 day"], ["168", "1 week"]].map(([v, l]) => el("option", { value: v, selected: (p.get("within") || "") === v }, l)))),
  el("button", { type: "submit" }, "filter"));
  const older = new URLSearchParams(p);
  if (page.next) older.set("before", page.next);
  renderAt(nav, 
    el("h1", {}, "Audit log"),
    form,
    table(["when", "who", "role", "action", "target", "reason", "outcome"], rows.map((r) =>
      el("tr", {}, el("td", { class: "muted", title: when(r.at_ms) }, ago(r.at_ms)), el("td", {}, r.who), el("td", {}, r.role), el("td", {}, r.action),
        el("td", {}, r.target), el("td", {}, r.reason), el("td", { class: r.outcome === "ok" ? "ok" : "bad" }, r.outcome)))),
    page.next ? el("p", {}, el("a", { href: `#/audit?${older}`, id: "older" }, "older records")) : null,
  );
}

// Worker versions: switches with their undo, versions connected and seen,
// and each queue's canary with its verdicts.
async function versionsPage() {
  const nav = navigation;
  const [v, { queues }] = await Promise.all([api("/api/v1/versions"), api("/api/v1/queues")]);
  const canaries = (await Promise.all(queues.map((q) => api(`/api/v1/canary/${encodeURIComponent(q.name)}`).catch(() => null))))
    .filter((c) => c && c.version && !(c.percent === 100 && c.max_wait === "0s"));
  if (nav !== navigation) return;
  const enable = (x) => (reason) => api(`/api/v1/versions/${encodeURIComponent(x.version)}/enable`, { method: "POST", body: { queue: x.queue || undefined, tenant: x.tenant || undefined }, reason });
  const end = (c, how) => (reason) => api(`/api/v1/canary/${encodeURIComponent(c.queue)}/${how}`, { method: "POST", reason });
  const versions = [...new Set([...Object.keys(v.connected), ...Object.keys(v.seen)])].sort();
  renderAt(nav, 
    el("h1", {}, "Versions"),
    el("h2", {}, "Switched off"),
    table(["version", "queue", "tenant", ""], v.switches.map((x) =>
      el("tr", {}, el("td", {}, x.version), el("td", {}, x.queue || "every queue"), el("td", {}, x.tenant || "every tenant"),
        el("td", {}, action("enable", enable(x), { askReason: `Lease jobs to version ${x.version} again?` }))))),
    el("h2", {}, "Seen"),
    table(["version", "workers connected", "first seen", "last seen"], versions.map((name) =>
      el("tr", {}, el("td", {}, name || "(none)"), el("td", {}, v.connected[name] || 0),
        el("td", { class: "muted" }, v.seen[name] ? when(v.seen[name].first_seen_ms) : "-"), el("td", { class: "muted" }, v.seen[name] ? ago(v.seen[name].last_seen_ms) : "-")))),
    el("h2", {}, "Canaries"),
    table(["queue", "version", "share", "canary", "control", "verdicts", ""], canaries.map((c) => {
      const arm = (a) => (a ? `${a.jobs} results, ${(100 * a.success_rate).toFixed(1)}% ok, ${dur(a.mean_run_ms)}` : "-");
      return el("tr", { "data-canary": c.queue }, el("td", {}, c.queue), el("td", {}, c.version), el("td", {}, `${c.percent}%`),
        el("td", {}, arm(c.stats && c.stats.canary)), el("td", {}, arm(c.stats && c.stats.control)),
        el("td", {}, ((c.stats && c.stats.comparison) || []).map((j) => el("span", { class: `tag ${j.verdict === "worse" ? "paused" : ""}` }, `${j.metric}: ${j.verdict}`))),
        el("td", {}, action("promote", end(c, "promote"), { askReason: `Promote ${c.version} on ${c.queue}: every worker takes every job?` }), " ",
          action("abort", end(c, "abort"), { danger: true, askReason: `Abort the canary ${c.version} on ${c.queue}?` })));
    })),
  );
}

// What jobs cost, by tenant, queue, job type and run.
async function costsPage() {
  const nav = navigation;
  const c = await api("/api/v1/costs");
  const usd = (n) => `$${n.toFixed(n < 1 ? 4 : 2)}`;
  const part = (title, rows, link) => [el("h2", {}, title),
    table([title.replace("By ", ""), "jobs", "cost (USD)", "lease time"], Object.entries(rows).sort(([, a], [, b]) => b.cost_usd - a.cost_usd).map(([k, x]) =>
      el("tr", {}, el("td", {}, link ? el("a", { href: link(k) }, k) : k), el("td", {}, x.jobs), el("td", {}, usd(x.cost_usd)), el("td", {}, dur(x.lease_ms)))))];
  renderAt(nav, 
    el("h1", {}, "Costs"),
    el("div", { class: "cards" }, card("jobs", c.total.jobs), card("cost (USD)", usd(c.total.cost_usd)), card("lease time", dur(c.total.lease_ms)), card("since", when(c.since_ms))),
    c.truncated ? el("p", { class: "bad" }, "Only the newest jobs were counted: narrow it with drover costs --since.") : null,
    part("By tenant", c.by_tenant),
    part("By queue", c.by_queue, (k) => `#/queue/${encodeURIComponent(k)}`),
    part("By job type", c.by_job_type),
    part("By run", c.by_run),
  );
}

// One run: its jobs by how they ended, budgets with what is left, its
// timeline, and replay (of all, or only the failed).
async function runPage(tenant, run) {
  const nav = navigation;
  const q = `tenant=${encodeURIComponent(tenant)}`;
  const r = encodeURIComponent(run);
  const [info, timeline] = await Promise.all([api(`/api/v1/runs/${r}?${q}`), api(`/api/v1/runs/${r}/timeline?${q}&limit=200`)]);
  const replay = (failedOnly) => (reason) => api(`/api/v1/runs/${r}/replay`, { method: "POST", body: { tenant, failed_only: failedOnly }, reason });
  const b = info.budget;
  renderAt(nav,
    el("h1", {}, `Run ${run} `, el("span", { class: `tag ${b.state}` }, b.state), b.held_by ? ` by ${b.held_by}` : ""),
    el("div", {},
      action("replay failed", replay(true), { askReason: `Enqueue the ${info.jobs.dead + info.jobs.cancelled} dead or cancelled jobs of run ${run} again, as a new run?` }), " ",
      action("replay all", replay(false), { askReason: `Enqueue all ${info.jobs.enqueued} jobs of run ${run} again, as a new run?` }), " ",
      el("a", { href: `#/jobs?run=${r}&${q}` }, "its jobs")),
    el("div", { class: "cards", id: "run-cards" },
      card("tenant", tenant), card("enqueued", info.jobs.enqueued), card("unfinished", info.jobs.unfinished),
      card("succeeded", info.jobs.succeeded, "ok"), card("dead", info.jobs.dead, info.jobs.dead ? "bad" : ""), card("cancelled", info.jobs.cancelled),
      card("cost (USD)", `$${b.cost_usd.toFixed(4)}`), card("lease time", dur(b.lease_ms)), card("attempts", b.attempts),
      card("started", ago(info.first_at_ms), "", when(info.first_at_ms)),
      info.replay_of ? card("replay of", info.replay_of) : null),
    el("h2", {}, "Budgets"),
    table(["budget", "limit", "used", "left"], b.budgets.map((u) =>
      el("tr", { "data-budget": u.budget }, el("td", {}, u.budget.replaceAll("_", " ")), el("td", {}, u.limit), el("td", { class: u.used >= u.limit ? "bad" : "" }, u.used), el("td", {}, u.remaining)))),
    b.state === "held" ? el("div", { style: "margin-top:.5rem" }, overrideForm({ tenant, run })) : null,
    el("h2", {}, "Timeline"),
    table(["at", "job", "event"], timeline.events.map((e) =>
      el("tr", {}, el("td", { class: "muted" }, when(e.at_ms)), el("td", {}, el("a", { href: `#/job/${e.job_id}` }, e.job_id)), el("td", {}, e.what)))),
    timeline.truncated || timeline.next ? el("p", { class: "muted" }, "The first 200 events; drover runs timeline pages through the rest.") : null,
  );
}

// ---- routing ----------------------------------------------------------------------

async function route() {
  clearInterval(timer);
  const nav = ++navigation;
  const hash = location.hash || "#/";
  const path = hash.split("?")[0];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === path);
  try {
    const page = pageOf(path);
    if (!page) { render(el("p", {}, "No such page.")); return; }
    await page();
    refreshed();
    // Only if the person is still here: a slow load must not leave a
    // timer drawing this page over the one they moved to.
    if (nav === navigation) timer = setInterval(() => tick(page, nav), path === "#/" || path === "#" ? 2000 : 5000);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401) && nav === navigation) render(el("p", { class: "bad" }, `Could not load: ${e.message}`));
  }
}

// The page a path shows, as a function that loads and draws it.
function pageOf(path) {
  const pages = {
    "#/": overview, "#": overview, "#/queues": queuesPage, "#/jobs": jobsPage, "#/dead": deadPage,
    "#/workers": workersPage, "#/runs": runsPage, "#/tenants": tenantsPage, "#/schedules": schedulesPage,
    "#/audit": auditPage, "#/versions": versionsPage, "#/costs": costsPage,
  };
  if (pages[path]) return pages[path];
  if (path.startsWith("#/queue/")) return () => queuePage(decodeURIComponent(path.slice(8)));
  if (path.startsWith("#/job/")) return () => jobPage(path.slice(6));
  if (path.startsWith("#/run/")) {
    const [tenant, run] = path.slice(6).split("/").map(decodeURIComponent);
    return () => runPage(tenant, run || "");
  }
  return null;
}

// Live refresh, unless paused in the header; it waits while the person is
// typing in a form or has ticked boxes, so nothing they did is redrawn away.
let live = sessionStorage.getItem("drover-live") !== "off";
let ticking = false;

async function tick(page, nav) {
  if (!live || ticking || nav !== navigation) return;
  const focus = document.activeElement;
  if (main.contains(focus) && ["INPUT", "SELECT", "TEXTAREA"].includes(focus.tagName)) return;
  if (main.querySelector("input[type=checkbox]:checked")) return;
  ticking = true;
  try {
    const [members] = await Promise.all([api("/api/v1/cluster/members"), page()]);
    if (nav !== navigation) return;
    refreshed(members.leader_id ? null : "The cluster has no leader: reads may be stale and changes wait (drover cluster members says which nodes answer).");
  } catch (e) {
    if (nav === navigation && !(e instanceof ApiError && e.status === 401)) refreshed(`Refresh failed: ${e.message}. Showing what was loaded before; the node may be down.`);
  } finally {
    ticking = false;
  }
}

// Says when the page was last refreshed, or why it could not be.
function refreshed(problem) {
  const banner = document.getElementById("banner");
  banner.replaceChildren(problem || "");
  banner.hidden = !problem;
  const at = new Date().toLocaleTimeString();
  document.getElementById("updated").replaceChildren(problem ? `last try ${at}` : `updated ${at}`);
}

document.getElementById("live").addEventListener("click", () => {
  live = !live;
  sessionStorage.setItem("drover-live", live ? "on" : "off");
  showLive();
});

function showLive() {
  const b = document.getElementById("live");
  b.replaceChildren(live ? "pause refresh" : "resume refresh");
  b.setAttribute("aria-pressed", live ? "false" : "true");
}
showLive();

window.addEventListener("hashchange", route);
whoami().then((ok) => ok && route());
