// Switchyard operator dashboard: signs in once, then follows the API's live feed
// (GET /v1/admin/live, server-sent events) instead of polling: queues, workers, job stats
// and models arrive as events, and the job lists are re-read only when jobs changed.
// Plain JS on purpose: no build step, nothing fetched from outside this origin, charts
// drawn as inline SVG. Every value from the API goes into the page as text (never as
// HTML): job inputs and errors come from users.
"use strict";

const TOKEN_KEY = "switchyard.dashboard.token";
const RECENT_LIMIT = 25;
const FAILED_LIMIT = 10;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const LIVE_EVENTS = ["snapshot", "queues", "workers", "jobs", "stats", "models"];
const LISTS_GAP_MS = 2000;  // job lists are re-read at most this often
const HISTORY_GAP_MS = 5000;  // charts likewise
const RECONNECT_MS = [1000, 2000, 5000, 10000];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (selector) => document.querySelector(selector);
// Job search paging: the cursor of the page shown (null: newest) and the next page's.
let pageCursor = null;
let nextCursor = null;
let pendingBulk = null;  // {action, filter, count} awaiting the operator's confirmation
let detailJob = null;  // id of the job whose detail is open
let detailStream = null;  // AbortController of its live event stream
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// Who is signed in: their role, and whether it may act (retry, cancel, pause, purge…).
let role = null;
let canAct = false;
// The live feed.
let live = null;  // the EventSource
let liveRetry = 0;  // reconnects in a row that failed
let liveTimer = null;
let lastQueues = [];
let lastHistory = null;
// Re-reading the lists and the history: one request in flight, at most one queued.
const lists = { running: false, again: false, at: 0, timer: null };
const historyLoad = { running: false, again: false, at: 0, timer: null };
let stopped = true;

// --- small DOM helpers -----------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function fillBody(table, rows, emptyText) {
  const body = table.tBodies[0];
  const columns = table.tHead.rows[0].cells.length;
  body.replaceChildren(...(rows.length ? rows
    : [el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText))]));
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function banner(text, kind = "info") {
  const node = $("#banner");
  node.textContent = text || "";
  node.className = `banner ${kind}`;
  node.hidden = !text;
}

// --- formatting ------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

function when(iso) {
  return iso ? timeFormat.format(new Date(iso)) : "—";
}

function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${(value / 60).toFixed(1)} min`;
}

function runTime(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return seconds((end - new Date(job.started_at)) / 1000);
}

function money(value) {
  if (!value) return "$0";
  return value < 0.01 ? `$${value.toFixed(6)}` : `$${value.toFixed(2)}`;
}

function compact(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)} M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(1)} k`;
  return String(value);
}

function badge(status) {
  return el("span", { class: `badge ${status}` }, status);
}

function shortId(id) {
  return el("code", { title: id }, id.slice(0, 8));
}

// --- API -------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = options.token ?? sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body?.error?.message || `${response.status} ${response.statusText}`;
    throw new HttpError(response.status, message);
  }
  return body;
}

// A 401 ends the session, a 403 means this role may not read the dashboard; anything else
// is shown and left to the live feed's next event (or reconnect) to mend.
function failed(error, what) {
  if (error.status === 401) {
    signOut("Your session ended. Sign in again.");
    return;
  }
  if (error.status === 403) {
    denied();
    return;
  }
  banner(`Could not ${what}: ${error.message}`, "error");
}

// --- signing in and out ----------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  const email = $("#email").value.trim();
  const password = $("#password").value;
  show("#login-error", false);
  try {
    let token = key;
    if (!token) {
      if (!email || !password) throw new Error("Enter an API key, or email and password.");
      const session = await api("/v1/auth/login", {
        method: "POST", token: "", body: JSON.stringify({ email, password }),
        headers: { "Content-Type": "application/json" },
      });
      token = session.access_token;
    }
    await probe(token);
    sessionStorage.setItem(TOKEN_KEY, token);
    $("#login-form").reset();
    start();
  } catch (error) {
    $("#login-error").textContent = error.message;
    show("#login-error", true);
  }
}

// A wrong key is told apart here, on the form; a token whose role may not read the
// dashboard is kept, and start() shows the notice.
async function probe(token) {
  try {
    await api("/v1/auth/session", { token });
  } catch (error) {
    if (error.status === 401) throw new Error("That API key or password is not valid.");
    if (error.status !== 403) throw error;
  }
}

function stopEverything() {
  stopped = true;
  closeLive();
  for (const job of [lists, historyLoad]) {
    clearTimeout(job.timer);
    job.timer = null;
  }
  closeDetail();
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  stopEverything();
  role = null;
  canAct = false;
  delete document.body.dataset.role;
  show("#dashboard", false);
  show("#denied", false);
  show("#sign-out", false);
  show("#role", false);
  show("#live", false);
  show("#login", true);
  $("#updated").textContent = "";
  banner(message, "warn");
  $("#api-key").focus();
}

function denied() {
  stopEverything();
  show("#dashboard", false);
  show("#live", false);
  show("#denied", true);
}

// The caller's role, from GET /v1/auth/session (`role`, `permissions`); older servers
// only let admins in, so a session without them is an admin's if it got this far.
async function learnRole() {
  const session = await api("/v1/auth/session");
  const found = session.role || session.user?.role || (session.via === "bootstrap" ? "admin" : "user");
  const permissions = session.permissions
    || (found === "admin" ? ["read", "act_jobs", "admin"] : []);
  return { role: found, canRead: permissions.includes("read"), canAct: permissions.includes("act_jobs") };
}

async function start() {
  banner("");
  show("#login", false);
  show("#sign-out", true);
  stopped = false;
  try {
    const who = await learnRole();
    if (!who.canRead) {
      denied();
      return;
    }
    role = who.role;
    canAct = who.canAct;
  } catch (error) {
    failed(error, "read your session");
    if (error.status !== 401 && error.status !== 403) liveTimer = setTimeout(start, 3000);
    return;
  }
  document.body.dataset.role = role;
  $("#role").textContent = canAct ? role : `${role} · read-only`;
  show("#role", true);
  for (const button of document.querySelectorAll(".act")) button.hidden = !canAct;
  connectLive();
  loadVersions();
}

async function loadVersions() {
  try {
    const system = await api("/v1/system/status");
    $("#versions").textContent = Object.entries(system.versions)
      .map(([name, version]) => `${name} ${version}`).join(" · ");
  } catch {
    // Versions are a footnote: the live feed reports what matters.
  }
}

// --- the live feed ---------------------------------------------------------------------

function setLive(state, text) {
  const node = $("#live");
  node.dataset.state = state;
  $("#live-text").textContent = text;
  node.hidden = false;
}

function closeLive() {
  clearTimeout(liveTimer);
  liveTimer = null;
  if (live) live.close();
  live = null;
}

// EventSource cannot send the Authorization header: a short-lived ticket, asked for with
// the token, goes in the URL. EventSource reconnects by itself after a dropped connection
// (the feed starts again with a snapshot); once the ticket has expired that reconnect is
// refused, the source closes, and a new ticket opens a new one.
async function connectLive() {
  closeLive();
  if (stopped) return;
  setLive(liveRetry ? "reconnecting" : "connecting", liveRetry ? "reconnecting…" : "connecting…");
  let ticket;
  try {
    ticket = await api("/v1/admin/live/tickets", { method: "POST" });
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      failed(error, "open the live feed");
      return;
    }
    retryLive();
    return;
  }
  if (stopped) return;
  const source = new EventSource(ticket.url);
  live = source;
  source.addEventListener("open", () => setLive("connecting", "connected"));
  source.addEventListener("error", () => {
    if (live !== source) return;
    if (source.readyState === EventSource.CLOSED) retryLive();
    else setLive("reconnecting", "reconnecting…");
  });
  for (const type of LIVE_EVENTS) {
    source.addEventListener(type, (event) => {
      if (live !== source) return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      liveRetry = 0;
      setLive("live", "live");
      $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
      onLive[type](data);
    });
  }
}

function retryLive() {
  closeLive();
  if (stopped) return;
  setLive("reconnecting", "reconnecting…");
  const wait = RECONNECT_MS[Math.min(liveRetry, RECONNECT_MS.length - 1)];
  liveRetry += 1;
  liveTimer = setTimeout(connectLive, wait);
}

const onLive = {
  snapshot(data) {
    renderQueues(data.queues);
    renderWorkers(data.workers);
    renderStats(data.stats);
    renderModels(data.models);
    show("#denied", false);
    show("#dashboard", true);
    // Whatever changed while disconnected: read the lists and charts afresh.
    refreshLists(true);
    refreshHistory(true);
  },
  queues(data) {
    const paused = (queues) => queues.map((q) => `${q.name}:${q.paused}`).join();
    const pauseChanged = paused(data.data) !== paused(lastQueues);
    renderQueues(data.data);
    if (pauseChanged) refreshLists();  // the audit log has the pause or resume
  },
  workers(data) {
    renderWorkers(data.data);
  },
  jobs(data) {
    let ended = false;
    for (const job of data.data) {
      const row = document.querySelector(`#jobs tr[data-job-id="${CSS.escape(job.id)}"]`);
      if (row) row.replaceWith(jobRow(job));
      if (TERMINAL.has(job.status)) ended = true;
    }
    refreshLists();
    if (ended) refreshHistory();
  },
  stats(data) {
    renderStats(data);
    refreshHistory();
  },
  models(data) {
    renderModels(data.data);
  },
};

// Runs `load` now, or once more as soon as the one in flight ends, at most every `gap` ms.
function throttled(state, gap, load, now) {
  if (stopped) return;
  if (state.running) {
    state.again = true;
    return;
  }
  const wait = now ? 0 : Math.max(0, state.at + gap - Date.now());
  if (state.timer && !now) return;
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    state.timer = null;
    state.running = true;
    state.at = Date.now();
    try {
      await load();
    } finally {
      state.running = false;
      if (state.again) {
        state.again = false;
        throttled(state, gap, load, false);
      }
    }
  }, wait);
}

function refreshLists(now = false) {
  throttled(lists, LISTS_GAP_MS, loadLists, now);
}

function refreshHistory(now = false) {
  throttled(historyLoad, HISTORY_GAP_MS, loadHistory, now);
}

// The job lists, failure groups and audit log: read when jobs changed (or an action ran).
async function loadLists() {
  const recent = new URLSearchParams({ limit: RECENT_LIMIT, ...currentFilter() });
  if (pageCursor) recent.set("cursor", pageCursor);
  try {
    const [jobs, failedJobs, groups, audit] = await Promise.all([
      api(`/v1/admin/jobs?${recent}`),
      api(`/v1/admin/jobs?status=failed&limit=${FAILED_LIMIT}`),
      api("/v1/admin/jobs/failures?limit=10"),
      api("/v1/admin/audit?limit=10"),
    ]);
    if (stopped) return;
    nextCursor = jobs.next_cursor;
    $("#jobs-older").disabled = !nextCursor;
    $("#jobs-newest").disabled = !pageCursor;
    renderJobs(jobs.data);
    renderFailed(failedJobs.data);
    renderGroups(groups.data);
    renderAudit(audit.data);
    if ($("#banner").classList.contains("error")) banner("");  // keep action notices
  } catch (error) {
    failed(error, "read the job lists");
  }
}

async function loadHistory() {
  try {
    const data = await api("/v1/admin/queues/history?minutes=60");
    if (stopped) return;
    lastHistory = data;
    renderCharts(data);
    renderQueues(lastQueues);  // its per-minute throughput column
  } catch (error) {
    failed(error, "read the queue history");
  }
}

// --- rendering -------------------------------------------------------------------------

function card(label, value, detail, extraClass = "") {
  return el("div", { class: `card ${extraClass}` },
    el("div", { class: "card-label" }, label),
    el("div", { class: "card-value" }, value),
    el("div", { class: "card-detail muted" }, detail));
}

function renderStats(stats) {
  if (!stats) return;
  const run = stats.succeeded_run_time;
  $("#stats").replaceChildren(
    card("Jobs, last hour", stats.overall.last_hour, `${stats.overall.total} in total`),
    ...STATUSES.map((status) => {
      const count = stats.by_status[status] || { total: 0, last_hour: 0 };
      return card(status, count.last_hour, `${count.total} in total`, `status-${status}`);
    }),
    card("Run time p50", seconds(run.p50_s), `${run.count} succeeded in the last hour`),
    card("Run time p95", seconds(run.p95_s), "started to finished"),
  );
  renderKinds(stats.by_kind);
}

// Jobs finished in the last complete minute, per queue (from the history).
function lastMinute(name) {
  const queue = lastHistory?.queues.find((q) => q.name === name);
  if (!queue || queue.finished.length < 2) return "—";
  return queue.finished[queue.finished.length - 2];
}

function renderQueues(queues) {
  lastQueues = queues || [];
  fillBody($("#queues"), lastQueues.map((queue) => el("tr", { dataset: { queue: queue.name,
    paused: String(queue.paused) } },
    el("td", {}, el("code", {}, queue.name), queue.paused ? " " : null,
      queue.paused ? el("span", { class: "badge cancelled" }, "paused") : null),
    el("td", { class: `num${queue.queued ? " strong" : ""}` }, queue.queued),
    el("td", { class: "num" }, queue.delayed),
    el("td", { class: "num" }, queue.in_flight),
    el("td", { class: `num${queue.dead_letters ? " warn" : ""}` }, queue.dead_letters),
    el("td", { class: "num narrow-hide" }, lastMinute(queue.name)),
    el("td", { class: "actions" }, ...queueButtons(queue)))), "No queues.");
}

function queueButtons(queue) {
  if (!canAct) return [];
  const action = queue.paused ? "resume" : "pause";
  const buttons = [el("button", { class: "small secondary", type: "button",
    dataset: { action }, onclick: () => queueAction(queue.name, action) },
  queue.paused ? "Resume" : "Pause")];
  if (queue.dead_letters) {
    // Two clicks: the first turns the button into its own confirmation.
    const purge = el("button", { class: "small secondary danger", type: "button",
      dataset: { action: "purge" } }, "Purge dead…");
    purge.addEventListener("click", () => {
      if (purge.dataset.armed) {
        queueAction(queue.name, "dead-letters/purge");
        return;
      }
      purge.dataset.armed = "1";
      purge.textContent = `Purge ${queue.dead_letters}?`;
    });
    buttons.push(" ", purge);
  }
  return buttons;
}

function renderAudit(entries) {
  fillBody($("#audit"), entries.map((entry) => el("tr", { dataset: { action: entry.action } },
    el("td", {}, when(entry.at)),
    el("td", { class: "owner" }, entry.actor),
    el("td", {}, entry.actor_role || "—"),
    el("td", {}, el("code", {}, entry.action)),
    el("td", {}, entry.target))), "No operator action yet.");
}

async function queueAction(name, action) {
  const done = { pause: "paused — its jobs stay queued", resume: "resumed" };
  try {
    const result = await api(`/v1/admin/queues/${encodeURIComponent(name)}/${action}`,
      { method: "POST" });
    banner(`Queue ${name}: ${done[action] || `${result.purged} dead letters purged`}.`);
    if (result && "paused" in result) {
      renderQueues(lastQueues.map((queue) => (queue.name === name ? result : queue)));
    }
  } catch (error) {
    failed(error, `${action} queue ${name}`);
  }
  refreshLists(true);
}

function renderWorkers(workers) {
  workers = workers || [];
  $("#worker-count").textContent = workers.length;
  fillBody($("#workers"), workers.map((worker) => {
    const info = worker.info || {};
    const name = info.host ? `${info.host}:${info.pid}` : worker.id;
    const stale = worker.last_seen_s_ago > 15;
    return el("tr", { class: "worker", dataset: { worker: worker.id } },
      el("td", {}, el("code", {}, name)),
      el("td", {}, (info.queues || []).join(", ") || "—"),
      el("td", { class: "num" }, info.threads ?? "—"),
      el("td", { class: "num" }, info.active_jobs ?? "—"),
      el("td", { class: "num" }, info.rss_mib != null ? `${Math.round(info.rss_mib)} MiB` : "—"),
      el("td", { class: `num${stale ? " warn" : ""}` },
        `${worker.last_seen_s_ago.toFixed(1)} s ago${stale ? " (stale)" : ""}`));
  }), "No live workers: jobs will wait in their queues.");
}

function actionButton(job) {
  if (!canAct) return null;
  if (job.status === "queued" || job.status === "running") {
    return el("button", { class: "small danger", type: "button", dataset: { action: "cancel" },
      onclick: () => act(job, "cancel") }, "Cancel");
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return el("button", { class: "small", type: "button", dataset: { action: "retry" },
      onclick: () => act(job, "retry") }, "Retry");
  }
  return null;
}

function jobRow(job) {
  return el("tr", { class: "job", dataset: { jobId: job.id, status: job.status } },
    el("td", {}, when(job.created_at)),
    el("td", {}, el("button", { type: "button", class: "link", dataset: { action: "detail" },
      onclick: () => openDetail(job.id) }, shortId(job.id))),
    el("td", {}, job.kind),
    el("td", { class: "owner narrow-hide" }, job.owner_id),
    el("td", {}, badge(job.status)),
    el("td", { class: "num narrow-hide" }, job.attempts),
    el("td", { class: "num narrow-hide" }, `${Math.round(job.progress * 100)}%`),
    el("td", { class: "num" }, runTime(job)),
    el("td", { class: "actions" }, actionButton(job)));
}

function renderJobs(jobs) {
  fillBody($("#jobs"), jobs.map(jobRow), "No jobs match.");
}

function renderFailed(jobs) {
  fillBody($("#failed"), jobs.map((job) => el("tr", { class: "job", dataset: { jobId: job.id } },
    el("td", {}, when(job.finished_at)),
    el("td", {}, shortId(job.id)),
    el("td", {}, job.kind),
    el("td", { class: "owner" }, job.owner_id),
    el("td", { class: "error-text" },
      job.error ? el("span", {}, el("code", {}, job.error.code), ` ${job.error.message}`) : "—"),
    el("td", { class: "actions" }, actionButton(job)))), "No failed jobs.");
}

function renderKinds(byKind) {
  fillBody($("#kinds"), Object.entries(byKind || {}).map(([kind, count]) => el("tr", {},
    el("td", {}, kind),
    el("td", { class: "num" }, count.last_hour),
    el("td", { class: "num" }, count.total))), "No jobs yet.");
}

function renderModels(models) {
  fillBody($("#models"), (models || []).map((model) => {
    const deployment = model.deployment;
    return el("tr", { class: "model", dataset: { model: model.id } },
      el("td", {}, el("code", {}, model.id),
        model.provider ? el("span", { class: "muted" }, ` ${model.provider}`) : null),
      el("td", {}, el("span", { class: `badge model-${model.status}` }, model.status)),
      el("td", {}, deployment
        ? el("span", { title: deployment.state_message || "" },
          el("span", { class: `badge deploy-${deployment.state}` }, deployment.state),
          ` ${deployment.name}`)
        : "—"),
      el("td", { class: "num" }, model.requests_1h),
      el("td", { class: "num" }, model.requests_24h),
      el("td", { class: `num${model.errors_24h ? " warn" : ""}` }, model.errors_24h),
      el("td", { class: "num narrow-hide" },
        compact(model.prompt_tokens_24h + model.completion_tokens_24h)),
      el("td", { class: "num" }, money(model.cost_usd_24h
        + (deployment ? deployment.cost_accrued_usd : 0))),
      el("td", { class: "num narrow-hide" },
        model.avg_ms_24h != null ? seconds(model.avg_ms_24h / 1000) : "—"));
  }), "No model in the registry.");
}

async function act(job, action) {
  try {
    await api(`/v1/admin/jobs/${job.id}/${action}`, { method: "POST" });
    banner(`Job ${job.id.slice(0, 8)}: ${action === "cancel" ? "cancelled" : "queued again"}.`);
  } catch (error) {
    failed(error, `${action} job ${job.id.slice(0, 8)}`);
  }
  refreshLists(true);
}

// --- charts: inline SVG, one row per queue that finished jobs in the hour -------------

const CHART_W = 600;
const CHART_H = 120;
const CHART_PAD = 4;

// Points of one series, split where values are missing (null): one polyline per run.
function polylines(values, max, cls) {
  const step = (CHART_W - 2 * CHART_PAD) / Math.max(values.length - 1, 1);
  const y = (v) => (CHART_H - CHART_PAD - (v / (max || 1)) * (CHART_H - 2 * CHART_PAD)).toFixed(1);
  const runs = [];
  let run = [];
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      if (run.length) runs.push(run);
      run = [];
      return;
    }
    run.push(`${(CHART_PAD + i * step).toFixed(1)},${y(value)}`);
  });
  if (run.length) runs.push(run);
  return runs.map((points) => (points.length === 1
    ? svg("circle", { class: cls, r: 4, cx: points[0].split(",")[0], cy: points[0].split(",")[1] })
    : svg("polyline", { class: cls, points: points.join(" "), "data-points": points.length })));
}

function chart(kind, title, series, minutes, format) {
  const max = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const grid = [0.25, 0.5, 0.75].map((f) => svg("line", { class: "grid", x1: 0, x2: CHART_W,
    y1: CHART_PAD + f * (CHART_H - 2 * CHART_PAD), y2: CHART_PAD + f * (CHART_H - 2 * CHART_PAD) }));
  const hover = minutes.map((minute, i) => {
    const width = CHART_W / minutes.length;
    const text = series.map((s) => `${s.label}: ${s.values[i] === null ? "—" : format(s.values[i])}`);
    return svg("rect", { class: "hover", x: (i * width).toFixed(1), y: 0, width: width.toFixed(1),
      height: CHART_H }, svg("title", {}, `${clockFormat.format(new Date(minute))} · ${text.join(" · ")}`));
  });
  const picture = svg("svg", { class: `chart ${kind}`, viewBox: `0 0 ${CHART_W} ${CHART_H}`,
    preserveAspectRatio: "none", role: "img", "aria-label": title, "data-chart": kind },
  ...grid, ...series.flatMap((s) => polylines(s.values, max, s.cls)), ...hover);
  return el("figure", { class: "chart-box" },
    el("figcaption", {}, title, el("span", { class: "muted" }, ` max ${format(max)}`),
      ...series.map((s) => el("span", { class: `legend ${s.cls}` }, s.label))),
    picture,
    el("div", { class: "axis muted" },
      el("span", {}, clockFormat.format(new Date(minutes[0]))),
      el("span", {}, clockFormat.format(new Date(minutes[minutes.length - 1])))));
}

function renderCharts(data) {
  const metric = $("#latency-metric").value;
  const active = data.queues.filter((q) => q.finished.some((n) => n > 0));
  $("#charts").replaceChildren(...(active.length ? active.map((queue) => el("div",
    { class: "chart-row", dataset: { queue: queue.name } },
    el("h3", {}, el("code", {}, queue.name),
      el("span", { class: "muted" }, ` ${queue.finished.reduce((a, b) => a + b, 0)} finished`)),
    el("div", { class: "chart-pair" },
      chart("throughput", "Jobs finished per minute", [
        { label: "finished", values: queue.finished, cls: "line finished" },
        { label: "failed", values: queue.failed, cls: "line failed" },
      ], data.minutes, (v) => String(Math.round(v))),
      chart("latency", metric === "run" ? "Run time p50 / p95" : "Queue wait p50 / p95", [
        { label: "p50", values: queue[`${metric}_p50_s`], cls: "line p50" },
        { label: "p95", values: queue[`${metric}_p95_s`], cls: "line p95" },
      ], data.minutes, seconds))))
    : [el("p", { class: "muted empty-chart" }, "No job finished in the last hour.")]));
}

// --- search, failure groups, bulk actions ----------------------------------------------

// The search form and status select as the API's filter fields (empty ones left out).
function currentFilter() {
  const filter = {};
  const status = $("#status-filter").value;
  if (status) filter.status = status;
  for (const [name, value] of new FormData($("#job-filters"))) {
    const text = String(value).trim();
    if (!text) continue;
    // datetime-local is the browser's local time: send the instant.
    filter[name] = name.startsWith("created_") ? new Date(text).toISOString() : text;
  }
  return filter;
}

function renderGroups(groups) {
  fillBody($("#failure-groups"), groups.map((group) => el("tr", { class: "group",
    dataset: { code: group.code } },
    el("td", {}, el("code", {}, group.code)),
    el("td", { class: "error-text", title: group.example || "" }, group.signature),
    el("td", {}, group.kinds.join(", ")),
    el("td", { class: "num strong" }, group.count),
    el("td", {}, when(group.last_at)),
    el("td", { class: "actions" },
      canAct ? el("button", { class: "small", type: "button", dataset: { action: "retry-group" },
        onclick: () => askBulk("retry", { code: group.code, signature: group.signature }) },
      "Retry all…") : null))), "No failed jobs.");
}

// Step one: count what the action would change, and ask.
async function askBulk(action, filter) {
  try {
    const result = await api("/v1/admin/jobs/bulk", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action, filter, dry_run: true }),
    });
    if (!result.matched) {
      banner(`No job to ${action}: none matches that are ${action === "retry"
        ? "failed or cancelled" : "queued or running"}.`, "warn");
      return;
    }
    pendingBulk = { action, filter, count: result.matched };
    $("#confirm-text").textContent =
      `${action === "retry" ? "Retry" : "Cancel"} ${result.matched} job${result.matched === 1 ? "" : "s"}?`;
    show("#confirm", true);
    $("#confirm").dataset.count = String(result.matched);
  } catch (error) {
    banner(`Could not count the jobs to ${action}: ${error.message}`, "error");
  }
}

// Step two: the operator confirmed.
async function confirmBulk() {
  const pending = pendingBulk;
  pendingBulk = null;
  show("#confirm", false);
  if (!pending) return;
  try {
    const result = await api("/v1/admin/jobs/bulk", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action: pending.action, filter: pending.filter }),
    });
    banner(`${pending.action === "retry" ? "Retried" : "Cancelled"} ${result.changed} of `
      + `${result.matched} jobs.`);
  } catch (error) {
    banner(`Could not ${pending.action} the jobs: ${error.message}`, "error");
  }
  refreshLists(true);
}

// --- job detail: replayed log, then live events --------------------------------------

async function openDetail(jobId) {
  closeDetail();
  detailJob = jobId;
  try {
    const detail = await api(`/v1/admin/jobs/${jobId}`);
    if (detailJob !== jobId) return;
    const job = detail.job;
    $("#detail-id").textContent = job.id;
    $("#detail-status").replaceChildren(badge(job.status));
    $("#detail-input").textContent = JSON.stringify(job.input, null, 2);
    $("#detail-output").textContent = JSON.stringify(job.error || job.result, null, 2);
    renderAttempts(detail.attempts);
    $("#events").replaceChildren(...detail.events.map(eventItem));
    show("#job-detail", true);
    $("#job-detail").scrollIntoView({ block: "nearest" });
    if (!TERMINAL.has(job.status)) follow(jobId, detail.events.map((e) => e.id));
  } catch (error) {
    banner(`Could not open job ${jobId.slice(0, 8)}: ${error.message}`, "error");
  }
}

function renderAttempts(attempts) {
  fillBody($("#attempts"), attempts.map((attempt) => el("tr", { class: "attempt" },
    el("td", { class: "num" }, attempt.attempt),
    el("td", {}, (attempt.worker || attempt.worker_id) ? el("code", {}, attempt.worker || attempt.worker_id) : "—"),
    el("td", {}, when(attempt.started_at)),
    el("td", {}, when(attempt.ended_at)),
    el("td", { class: "num" }, attempt.duration_s != null ? seconds(attempt.duration_s) : "—"),
    el("td", { title: attempt.error ? `${attempt.error.code}: ${attempt.error.message}` : "" },
      attempt.outcome ? badge(attempt.outcome) : "running"))), "No attempt yet.");
}

function eventItem(event) {
  const data = JSON.stringify(event.data);
  return el("li", { dataset: { type: event.type } }, `${when(event.at)} `,
    el("strong", {}, event.type), ` ${data.length > 300 ? `${data.slice(0, 300)}…` : data}`);
}

// EventSource cannot send the Authorization header, so the stream is read with fetch.
async function follow(jobId, seenIds) {
  const seen = new Set(seenIds);
  const controller = new AbortController();
  detailStream = controller;
  $("#detail-live").textContent = "live";
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(`/v1/admin/jobs/${jobId}/events`, {
      headers: { Authorization: `Bearer ${token}` }, signal: controller.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const fields = Object.fromEntries(frame.split("\n").filter((l) => !l.startsWith(":"))
          .map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim()]));
        if (!fields.event || seen.has(fields.id)) continue;
        seen.add(fields.id);
        const millis = Number((fields.id || "0").split("-")[0]);
        const parsed = JSON.parse(fields.data || "{}");
        const event = { id: fields.id, type: fields.event, at: new Date(millis).toISOString(),
          data: parsed.data ?? parsed };
        $("#events").append(eventItem(event));
        if (TERMINAL.has(event.type)) {
          $("#detail-status").replaceChildren(badge(event.type));
          controller.abort();
          return openDetail(jobId);  // the final state, attempts and result
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") banner(`Live events stopped: ${error.message}`, "warn");
  } finally {
    if (detailStream === controller) $("#detail-live").textContent = "";
  }
}

function closeDetail() {
  detailJob = null;
  if (detailStream) detailStream.abort();
  detailStream = null;
  show("#job-detail", false);
}

// --- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  $("#denied-sign-out").addEventListener("click", () => signOut());
  $("#status-filter").addEventListener("change", () => { pageCursor = null; refreshLists(true); });
  $("#job-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    pageCursor = null;
    refreshLists(true);
  });
  $("#filter-clear").addEventListener("click", () => {
    $("#job-filters").reset();
    pageCursor = null;
    refreshLists(true);
  });
  $("#jobs-older").addEventListener("click", () => { pageCursor = nextCursor; refreshLists(true); });
  $("#jobs-newest").addEventListener("click", () => { pageCursor = null; refreshLists(true); });
  $("#bulk-retry").addEventListener("click", () => askBulk("retry", currentFilter()));
  $("#bulk-cancel").addEventListener("click", () => askBulk("cancel", currentFilter()));
  $("#confirm-yes").addEventListener("click", confirmBulk);
  $("#confirm-no").addEventListener("click", () => { pendingBulk = null; show("#confirm", false); });
  $("#detail-close").addEventListener("click", closeDetail);
  $("#latency-metric").addEventListener("change", () => { if (lastHistory) renderCharts(lastHistory); });
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut();
});
