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
// Job search paging: the cursor of the page shown (null: newest) and the next page's.
let pageCursor = null;
let nextCursor = null;
let pendingBulk = null;  // {action, filter, count} awaiting the operator's confirmation
let detailJob = null;  // id of the job whose detail is open
let detailStream = null;  // AbortController of its live event stream
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

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
  const recent = new URLSearchParams({ limit: RECENT_LIMIT, ...currentFilter() });
  if (pageCursor) recent.set("cursor", pageCursor);
  try {
    const [system, stats, jobs, failed, groups, queues, audit] = await Promise.all([
      api("/v1/system/status"),
      api("/v1/admin/jobs/stats"),
      api(`/v1/admin/jobs?${recent}`),
      api(`/v1/admin/jobs?status=failed&limit=${FAILED_LIMIT}`),
      api("/v1/admin/jobs/failures?limit=10"),
      api("/v1/admin/queues"),
      api("/v1/admin/audit?limit=10"),
    ]);
    renderAudit(audit.data);
    renderStats(stats);
    renderQueues(queues.data);
    renderWorkers(system.workers);
    nextCursor = jobs.next_cursor;
    $("#jobs-older").disabled = !nextCursor;
    $("#jobs-newest").disabled = !pageCursor;
    renderJobs(jobs.data);
    renderFailed(failed.data);
    renderGroups(groups.data);
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
  fillBody($("#queues"), queues.map((queue) => el("tr", { dataset: { queue: queue.name,
    paused: String(queue.paused) } },
    el("td", {}, el("code", {}, queue.name), queue.paused ? " " : null,
      queue.paused ? el("span", { class: "badge cancelled" }, "paused") : null),
    el("td", { class: `num${queue.queued ? " strong" : ""}` }, queue.queued),
    el("td", { class: "num" }, queue.delayed),
    el("td", { class: "num" }, queue.in_flight),
    el("td", { class: `num${queue.dead_letters ? " warn" : ""}` }, queue.dead_letters),
    el("td", { class: "actions" },
      el("button", { class: "small secondary", type: "button",
        dataset: { action: queue.paused ? "resume" : "pause" },
        onclick: () => queueAction(queue.name, queue.paused ? "resume" : "pause") },
      queue.paused ? "Resume" : "Pause")))), "No queues.");
}

function renderAudit(entries) {
  fillBody($("#audit"), entries.map((entry) => el("tr", { dataset: { action: entry.action } },
    el("td", {}, when(entry.at)),
    el("td", { class: "owner" }, entry.actor),
    el("td", {}, el("code", {}, entry.action)),
    el("td", {}, entry.target))), "No operator action yet.");
}

async function queueAction(name, action) {
  try {
    await api(`/v1/admin/queues/${encodeURIComponent(name)}/${action}`, { method: "POST" });
    banner(`Queue ${name}: ${action === "pause" ? "paused — its jobs stay queued" : "resumed"}.`);
  } catch (error) {
    banner(`Could not ${action} queue ${name}: ${error.message}`, "error");
  }
  refresh();
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
      el("td", { class: "num" }, info.active_jobs ?? "—"),
      el("td", { class: "num" }, info.rss_mib != null ? `${Math.round(info.rss_mib)} MiB` : "—"),
      el("td", { class: `num${stale ? " warn" : ""}` },
        `${worker.last_seen_s_ago.toFixed(1)} s ago${stale ? " (stale)" : ""}`));
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
    el("td", {}, el("button", { type: "button", class: "link", dataset: { action: "detail" },
      onclick: () => openDetail(job.id) }, shortId(job.id))),
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
      el("button", { class: "small", type: "button", dataset: { action: "retry-group" },
        onclick: () => askBulk("retry", { code: group.code, signature: group.signature }) },
      "Retry all…")))), "No failed jobs.");
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
  refresh();
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
    el("td", {}, when(attempt.started_at)),
    el("td", {}, when(attempt.ended_at)),
    el("td", {}, attempt.outcome ? badge(attempt.outcome) : "running"))), "No attempt yet.");
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
  $("#status-filter").addEventListener("change", () => { pageCursor = null; refresh(); });
  $("#job-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    pageCursor = null;
    refresh();
  });
  $("#filter-clear").addEventListener("click", () => {
    $("#job-filters").reset();
    pageCursor = null;
    refresh();
  });
  $("#jobs-older").addEventListener("click", () => { pageCursor = nextCursor; refresh(); });
  $("#jobs-newest").addEventListener("click", () => { pageCursor = null; refresh(); });
  $("#bulk-retry").addEventListener("click", () => askBulk("retry", currentFilter()));
  $("#bulk-cancel").addEventListener("click", () => askBulk("cancel", currentFilter()));
  $("#confirm-yes").addEventListener("click", confirmBulk);
  $("#confirm-no").addEventListener("click", () => { pendingBulk = null; show("#confirm", false); });
  $("#detail-close").addEventListener("click", closeDetail);
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut();
});
