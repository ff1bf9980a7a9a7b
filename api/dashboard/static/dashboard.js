// Switchyard operator dashboard: signs in once, then polls the admin JSON routes.
// Plain JS on purpose: no build step, nothing fetched from outside this origin. Every
// value from the API goes into the page as text (never as HTML): job inputs and errors
// come from users.
"use strict";

const TOKEN_KEY = "switchyard.dashboard.token";
const POLL_MS = 3000;
const RECENT_LIMIT = 25;
const FAILED_LIMIT = 10;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

const $ = (selector) => document.querySelector(selector);
let pollTimer = null;
let polling = false;

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
      if (!email || !password) throw new Error("Enter an admin API key, or email and password.");
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

// A wrong key is told apart here, on the form; a non-admin's token is kept, and the first
// refresh shows the admins-only notice.
async function probe(token) {
  try {
    await api("/v1/system/status", { token });
  } catch (error) {
    if (error.status === 401) throw new Error("That API key or password is not valid.");
    if (error.status !== 403) throw error;
  }
}

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(pollTimer);
  pollTimer = null;
  show("#dashboard", false);
  show("#denied", false);
  show("#sign-out", false);
  show("#login", true);
  $("#updated").textContent = "";
  banner(message, "warn");
  $("#api-key").focus();
}

function start() {
  banner("");
  show("#login", false);
  show("#sign-out", true);
  refresh();
}

// --- polling ---------------------------------------------------------------------------

async function refresh() {
  clearTimeout(pollTimer);
  if (polling) return;
  polling = true;
  const status = $("#status-filter").value;
  const recent = new URLSearchParams({ limit: RECENT_LIMIT });
  if (status) recent.set("status", status);
  try {
    const [system, stats, jobs, failed] = await Promise.all([
      api("/v1/system/status"),
      api("/v1/admin/jobs/stats"),
      api(`/v1/admin/jobs?${recent}`),
      api(`/v1/admin/jobs?status=failed&limit=${FAILED_LIMIT}`),
    ]);
    renderStats(stats);
    renderQueues(system.queues);
    renderWorkers(system.workers);
    renderJobs(jobs.data);
    renderFailed(failed.data);
    renderKinds(stats.by_kind);
    $("#versions").textContent = Object.entries(system.versions)
      .map(([name, version]) => `${name} ${version}`).join(" · ");
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    show("#denied", false);
    show("#dashboard", true);
    if ($("#banner").classList.contains("error")) banner("");  // keep action notices
  } catch (error) {
    polling = false;
    if (error.status === 401) return signOut("Your session ended. Sign in again.");
    if (error.status === 403) {
      show("#dashboard", false);
      show("#denied", true);
      return;  // no point polling: the role will not change under this token
    }
    banner(`Could not refresh: ${error.message}. Retrying…`, "error");
  }
  polling = false;
  pollTimer = setTimeout(refresh, POLL_MS);
}

// --- rendering -------------------------------------------------------------------------

function card(label, value, detail, extraClass = "") {
  return el("div", { class: `card ${extraClass}` },
    el("div", { class: "card-label" }, label),
    el("div", { class: "card-value" }, value),
    el("div", { class: "card-detail muted" }, detail));
}

function renderStats(stats) {
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
}

function renderQueues(queues) {
  fillBody($("#queues"), queues.map((queue) => {
    const inFlight = Math.max(queue.messages - queue.queued, 0);
    return el("tr", { dataset: { queue: queue.name } },
      el("td", {}, el("code", {}, queue.name)),
      el("td", { class: `num${queue.queued ? " strong" : ""}` }, queue.queued),
      el("td", { class: "num" }, queue.delayed),
      el("td", { class: "num" }, inFlight));
  }), "No queues.");
}

function renderWorkers(workers) {
  $("#worker-count").textContent = workers.length;
  fillBody($("#workers"), workers.map((worker) => {
    const info = worker.info || {};
    const name = info.host ? `${info.host}:${info.pid}` : worker.id;
    const stale = worker.last_seen_s_ago > 15;
    return el("tr", { class: "worker", dataset: { worker: worker.id } },
      el("td", {}, el("code", {}, name)),
      el("td", {}, (info.queues || []).join(", ") || "—"),
      el("td", { class: "num" }, info.threads ?? "—"),
      el("td", { class: `num${stale ? " warn" : ""}` }, `${worker.last_seen_s_ago.toFixed(1)} s ago`));
  }), "No live workers: jobs will wait in their queues.");
}

function actionButton(job) {
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

function renderJobs(jobs) {
  fillBody($("#jobs"), jobs.map((job) => el("tr", { class: "job", dataset: { jobId: job.id } },
    el("td", {}, when(job.created_at)),
    el("td", {}, shortId(job.id)),
    el("td", {}, job.kind),
    el("td", { class: "owner" }, job.owner_id),
    el("td", {}, badge(job.status)),
    el("td", { class: "num" }, job.attempts),
    el("td", { class: "num" }, `${Math.round(job.progress * 100)}%`),
    el("td", { class: "num" }, runTime(job)),
    el("td", { class: "actions" }, actionButton(job)))), "No jobs match.");
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
  fillBody($("#kinds"), Object.entries(byKind).map(([kind, count]) => el("tr", {},
    el("td", {}, kind),
    el("td", { class: "num" }, count.last_hour),
    el("td", { class: "num" }, count.total))), "No jobs yet.");
}

async function act(job, action) {
  try {
    await api(`/v1/admin/jobs/${job.id}/${action}`, { method: "POST" });
    banner(`Job ${job.id.slice(0, 8)}: ${action === "cancel" ? "cancelled" : "queued again"}.`);
  } catch (error) {
    banner(`Could not ${action} job ${job.id.slice(0, 8)}: ${error.message}`, "error");
  }
  refresh();
}

// --- wiring ----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => signOut());
  $("#denied-sign-out").addEventListener("click", () => signOut());
  $("#status-filter").addEventListener("change", refresh);
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut();
});
