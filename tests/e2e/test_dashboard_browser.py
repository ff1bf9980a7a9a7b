"""The operator dashboard in a real headless Chromium against the real stack: an admin signs
in and watches queues, workers, jobs, charts and models arrive over the live feed (no
reload, no polling), and cancels a job from the page; a viewer sees everything and can act
on nothing; a plain user is told the page is not for them; it fits a phone's width."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.browser import Browser, Page
from tests.integration.accounts import PASSWORD, new_user
from tests.integration.jobclient import client, lorem_input, poll, submit, wait_status

# Set to a path to keep the admin test's screenshot (it is written to tmp_path anyway).
SCREENSHOT_COPY = os.environ.get("DASHBOARD_SCREENSHOT")


@pytest.fixture
def http(stack: Any) -> Iterator[httpx.Client]:
    with client(stack) as http:
        yield http


@pytest.fixture
def page() -> Iterator[Page]:
    with Browser() as browser:
        yield browser.page
        assert browser.page.errors == [], "the page logged errors"


def _row(table: str, job_id: str) -> str:
    return f"document.querySelector('#{table} tr[data-job-id={json.dumps(job_id)}]')"


def _sign_in(page: Page, stack: Any, *, key: str | None = None, email: str | None = None,
             password: str | None = None) -> None:
    page.goto(f"{stack.base_url}/dashboard")
    if email:
        page.type("#email", email)
        page.type("#password", password or PASSWORD)
    else:
        page.type("#api-key", key or stack.admin_key)
    page.click("#sign-in")


def _live(page: Page) -> None:
    page.wait_for("document.querySelector('#live').dataset.state === 'live'",
                  what="the live feed connected")


# Requests the page made since `_count_requests` (fetch and EventSource alike).
_COUNT_REQUESTS = ("performance.setResourceTimingBufferSize(10000);"
                   " window.__requests = performance.getEntriesByType('resource').length; true")
_REQUESTS_SINCE = ("performance.getEntriesByType('resource').slice(window.__requests)"
                   ".map(e => new URL(e.name).pathname)")


def test_the_page_is_served_without_a_credential_and_holds_no_data(stack: Any) -> None:
    with httpx.Client(base_url=stack.base_url) as anonymous:
        page = anonymous.get("/dashboard")
        script = anonymous.get("/dashboard/static/dashboard.js")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert stack.admin_key not in page.text and "sy-" not in page.text.replace("sy-…", "")
    assert script.status_code == 200 and "/v1/admin/jobs" in script.text


def test_an_admin_watches_queues_workers_and_jobs_and_cancels_a_job(
    stack: Any, http: httpx.Client, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{stack.base_url}/dashboard")
    page.type("#api-key", stack.admin_key)
    page.click("#sign-in")

    page.wait_for("document.querySelector('#queues tr[data-queue=\"default\"]')"
                  " && document.querySelector('#queues tr[data-queue=\"chat\"]')",
                  what="the default and chat queues")
    # The I/O worker process (the CPU one consumes `ingest` only).
    worker = page.wait_for("[...document.querySelectorAll('#workers tr.worker')]"
                           ".map(row => row.innerText).find(text => text.includes('chat'))",
                           what="a live I/O worker")
    assert ":" in worker and "default" in worker and "chat" in worker  # host:pid, queues
    assert "MiB" in worker  # its memory, from the heartbeat
    assert page.evaluate("document.querySelector('#login').hidden") is True
    _live(page)
    assert page.evaluate("!document.querySelector('#live').hidden")
    # Models and deployments: the dev models, with their traffic.
    page.wait_for("document.querySelector('#models tr[data-model=\"dev/echo\"]')",
                  what="dev/echo in the models panel")
    page.evaluate("window.__loaded = performance.timeOrigin; true")
    page.evaluate(_COUNT_REQUESTS)

    slow = submit(http, "chat", lorem_input(400, delay_ms=50))  # ~20 s unless cancelled
    failed = submit(http, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    noop = submit(http, "noop", {"hello": "dashboard"})
    page.wait_for(f"{_row('jobs', noop['id'])}?.innerText.includes('succeeded')",
                  what="the noop job, succeeded, in recent jobs")
    page.wait_for(f"{_row('jobs', slow['id'])}?.innerText.includes('running')",
                  what="the slow job, running, in recent jobs")
    page.wait_for(f"{_row('failed', failed['id'])}?.innerText.includes('UPSTREAM_ERROR')",
                  what="the failed job with its error")
    # All of that arrived on the open page: no reload, and the lists were read on the
    # feed's job events, not on a timer (no request but the job lists and charts).
    assert page.evaluate("window.__loaded === performance.timeOrigin")
    paths = set(page.evaluate(_REQUESTS_SINCE))
    assert paths <= {"/v1/admin/jobs", "/v1/admin/jobs/failures", "/v1/admin/audit",
                     "/v1/admin/queues/history",
                     # a reconnect of the feed, if one happened meanwhile
                     "/v1/admin/live/tickets", "/v1/admin/live"}, paths
    # The throughput chart of the default queue, drawn once the noop job finished.
    points = page.wait_for(
        "document.querySelector('#charts .chart-row[data-queue=\"default\"]"
        " svg[data-chart=throughput] polyline')?.getAttribute('points')",
        what="the default queue's throughput chart", timeout_s=30)
    assert len(points.split()) == 60  # one point per minute of the hour
    assert page.evaluate("document.querySelector('#charts .chart-row[data-queue=\"default\"]"
                         " svg[data-chart=latency]').querySelectorAll('polyline, circle')"
                         ".length") >= 1

    page.click(f"#jobs tr[data-job-id=\"{slow['id']}\"] button[data-action=cancel]")

    assert wait_status(http, slow["id"])["status"] == "cancelled"
    page.wait_for(f"{_row('jobs', slow['id'])}?.querySelector('button[data-action=retry]')",
                  what="the cancelled job to offer a retry")
    assert "cancelled" in page.text("#banner")
    page.wait_for(r"/[1-9]\d* succeeded in the last hour/"
                  ".test(document.querySelector('#stats').innerText)",
                  what="run times, counting the noop job")

    page.wait_for("[...document.querySelectorAll('#models tr[data-model=\"dev/lorem\"] td')]"
                  ".some(td => /^[1-9]/.test(td.innerText))",
                  what="dev/lorem's requests in the models panel", timeout_s=45)

    shot = page.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 10_000
    if SCREENSHOT_COPY:
        shutil.copy(shot, SCREENSHOT_COPY)

    # A closed feed (here: closed by the page, as after an expired ticket) reconnects with
    # a fresh ticket, showing "reconnecting" meanwhile.
    page.evaluate("retryLive(); true")
    assert page.evaluate("document.querySelector('#live').dataset.state") == "reconnecting"
    _live(page)

    # The token lives in sessionStorage: a reload goes straight back to the dashboard.
    page.goto(f"{stack.base_url}/dashboard")
    page.wait_for("!document.querySelector('#dashboard').hidden", what="the dashboard")
    page.click("#sign-out")
    page.wait_for("!document.querySelector('#login').hidden", what="the sign-in form")
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.parametrize("credential", ["api_key", "password"])
def test_a_non_admin_is_told_the_dashboard_is_for_admins_only(
    stack: Any, http: httpx.Client, page: Page, credential: str
) -> None:
    user = new_user(http, stack.headers)
    page.goto(f"{stack.base_url}/dashboard")
    if credential == "api_key":
        page.type("#api-key", user.key)
    else:
        page.type("#email", user.email)
        page.type("#password", user.password)
    page.click("#sign-in")

    page.wait_for("!document.querySelector('#denied').hidden", what="the admins-only message")
    assert "operators and viewers only" in page.text("#denied")
    assert page.evaluate("document.querySelector('#dashboard').hidden") is True
    assert page.text("#jobs tbody") == ""  # nothing was rendered


def test_a_wrong_key_is_refused_on_the_sign_in_form(stack: Any, page: Page) -> None:
    page.goto(f"{stack.base_url}/dashboard")
    page.type("#api-key", "sy-not-a-real-key")
    page.click("#sign-in")

    page.wait_for("!document.querySelector('#login-error').hidden", what="the form's error")
    assert "not valid" in page.text("#login-error")
    assert page.evaluate("document.querySelector('#dashboard').hidden") is True
    assert page.evaluate("sessionStorage.length") == 0


def test_an_admin_finds_a_failed_job_by_its_error_bulk_retries_its_group_and_watches_a_job(
    stack: Any, http: httpx.Client, page: Page, tmp_path: Path
) -> None:
    failing = [submit(http, "chat", lorem_input(5, dev_options={"fail_after_tokens": n}))
               for n in (2, 3)]
    for job in failing:
        wait_status(http, job["id"])
    page.goto(f"{stack.base_url}/dashboard")
    page.type("#api-key", stack.admin_key)
    page.click("#sign-in")
    page.wait_for("!document.querySelector('#dashboard').hidden", what="the dashboard")

    # Find the job by its error text.
    page.type("#filter-error", "after 2 tokens")
    page.click("#filter-apply")
    page.wait_for(f"{_row('jobs', failing[0]['id'])} && !{_row('jobs', failing[1]['id'])}",
                  what="only the job whose error says 'after 2 tokens'")

    # Its failure group, retried in bulk after a confirmation that gives the count.
    group = http.get("/v1/admin/jobs/failures").json()["data"]
    lorem = next(g for g in group if "(dev_options)" in g["signature"])
    expected = http.post("/v1/admin/jobs/bulk", json={
        "action": "retry", "dry_run": True,
        "filter": {"code": lorem["code"], "signature": lorem["signature"]}}).json()["matched"]
    assert expected >= 2
    page.wait_for("[...document.querySelectorAll('#failure-groups tr.group')]"
                  ".some(row => row.innerText.includes('(dev_options)'))",
                  what="the dev models' failure group")
    page.evaluate("[...document.querySelectorAll('#failure-groups tr.group')]"
                  ".find(row => row.innerText.includes('(dev_options)'))"
                  ".querySelector('button[data-action=retry-group]').id = 'retry-this-group'")
    page.click("#retry-this-group")
    page.wait_for("!document.querySelector('#confirm').hidden", what="the confirmation")
    assert page.evaluate("document.querySelector('#confirm').dataset.count") == str(expected)
    assert f"Retry {expected} jobs?" in page.text("#confirm-text")
    page.click("#confirm-yes")
    page.wait_for("document.querySelector('#banner').innerText.includes('Retried')",
                  what="the bulk retry's notice")
    for job in failing:  # each ran once more, and failed the same way
        again = poll(lambda job=job: (row if (row := http.get(f"/v1/jobs/{job['id']}").json())
                                      ["attempts"] >= 2 and row["status"] == "failed"
                                      else None), timeout_s=30)
        assert again["error"]["code"] == "UPSTREAM_ERROR"

    # A running job's detail: its events arrive live, then its attempts and result.
    page.click("#filter-clear")
    slow = submit(http, "chat", lorem_input(40, delay_ms=100))
    page.wait_for(f"{_row('jobs', slow['id'])}", what="the slow job in the listing")
    page.click(f"#jobs tr[data-job-id=\"{slow['id']}\"] button[data-action=detail]")
    page.wait_for("document.querySelector('#events li[data-type=delta]')",
                  what="live delta events", timeout_s=20)
    page.wait_for("document.querySelector('#attempts').innerText.includes('succeeded')",
                  what="the finished attempt", timeout_s=30)
    assert "dev/lorem" in page.text("#detail-input")
    shot = page.screenshot(tmp_path / "dashboard-detail.png")
    assert shot.stat().st_size > 10_000


def test_an_admin_pauses_a_queue_its_job_stays_queued_then_resumes_it(
    stack: Any, http: httpx.Client, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{stack.base_url}/dashboard")
    page.type("#api-key", stack.admin_key)
    page.click("#sign-in")
    page.wait_for("document.querySelector('#queues tr[data-queue=\"default\"]')",
                  what="the default queue")
    try:
        page.click("#queues tr[data-queue=\"default\"] button[data-action=pause]")
        page.wait_for("document.querySelector('#queues tr[data-queue=\"default\"]')"
                      ".dataset.paused === 'true'", what="the queue shown paused")
        waiting = submit(http, "noop", {"n": "paused in the browser"})
        served = submit(http, "chat", {"model": "dev/echo",
                                       "messages": [{"role": "user", "content": "hi"}]})
        assert wait_status(http, served["id"])["status"] == "succeeded"
        assert http.get(f"/v1/jobs/{waiting['id']}").json()["status"] == "queued"
        page.wait_for(f"{_row('jobs', waiting['id'])}?.innerText.includes('queued')",
                      what="the paused queue's job, still queued")
        page.screenshot(tmp_path / "dashboard-paused.png")
        page.click("#queues tr[data-queue=\"default\"] button[data-action=resume]")
        assert wait_status(http, waiting["id"], timeout_s=30)["status"] == "succeeded"
        page.wait_for(f"{_row('jobs', waiting['id'])}?.innerText.includes('succeeded')",
                      what="the job, run after the resume")
        page.wait_for("document.querySelector('#audit tr[data-action=\"queue.resume\"]')"
                      " && document.querySelector('#audit tr[data-action=\"queue.pause\"]')",
                      what="the pause and the resume in the audit log")
    finally:
        http.post("/v1/admin/queues/default/resume")


def test_a_viewer_sees_everything_live_and_can_act_on_nothing(
    stack: Any, http: httpx.Client, page: Page, tmp_path: Path
) -> None:
    made = http.post("/v1/admin/users", json={"email": f"viewer-{os.getpid()}-{id(page)}@ex.com",
                                              "password": PASSWORD, "role": "viewer"})
    if made.status_code == 422:
        pytest.skip("the viewer role does not exist on this server yet")
    assert made.status_code == 201, made.text
    viewer = made.json()
    failing = submit(http, "chat", lorem_input(3, dev_options={"fail_after_tokens": 1}))
    wait_status(http, failing["id"])

    _sign_in(page, stack, email=viewer["email"])
    _live(page)
    assert "read-only" in page.text("#role")
    page.wait_for(f"{_row('failed', failing['id'])}", what="the failed job")
    page.wait_for("document.querySelector('#queues tr[data-queue=\"default\"]')",
                  what="the queues")
    slow = submit(http, "chat", lorem_input(60, delay_ms=50))
    page.wait_for(f"{_row('jobs', slow['id'])}?.innerText.includes('running')",
                  what="the viewer's page following a job live")

    actions = ("button[data-action=cancel], button[data-action=retry], "
               "button[data-action=pause], button[data-action=resume], "
               "button[data-action=purge], button[data-action=retry-group]")
    assert page.evaluate(f"document.querySelectorAll({json.dumps(actions)}).length") == 0
    for bulk in ("#bulk-retry", "#bulk-cancel"):
        assert page.evaluate(f"document.querySelector('{bulk}').offsetParent === null")
    # Detail stays readable.
    page.click(f"#jobs tr[data-job-id=\"{slow['id']}\"] button[data-action=detail]")
    page.wait_for("!document.querySelector('#job-detail').hidden", what="the job's detail")
    page.screenshot(tmp_path / "dashboard-viewer.png")

    # The API refuses the viewer anyway.
    token = page.evaluate("sessionStorage.getItem('switchyard.dashboard.token')")
    refused = http.post(f"/v1/admin/jobs/{slow['id']}/cancel",
                        headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403, refused.text
    http.post(f"/v1/admin/jobs/{slow['id']}/cancel")


def test_the_dashboard_fits_a_phone(stack: Any, http: httpx.Client, tmp_path: Path) -> None:
    with Browser(width=500, height=900) as browser:
        page = browser.page
        # A phone's screen (Chromium keeps a window at least 500 px wide): the page's
        # viewport meta applies as on a phone.
        page.send("Emulation.setDeviceMetricsOverride", width=390, height=844,
                  deviceScaleFactor=2, mobile=True)
        submit(http, "noop", {"phone": True})
        _sign_in(page, stack)
        _live(page)
        page.wait_for("document.querySelector('#jobs tr.job')", what="a job row")
        page.wait_for("document.querySelector('#models tr.model')", what="a model row")
        assert page.evaluate("window.innerWidth") <= 400
        # Nothing wider than the screen: wide tables scroll inside their panels.
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate(
            "window.innerWidth") + 1
        assert page.evaluate("getComputedStyle(document.querySelector('#jobs th.narrow-hide'))"
                             ".display") == "none"
        shot = page.screenshot(tmp_path / "dashboard-phone.png")
        assert shot.stat().st_size > 5_000
        assert browser.page.errors == []
