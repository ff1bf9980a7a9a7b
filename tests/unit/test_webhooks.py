"""Webhook signing and delivery against a real local HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines import webhook_events
from pipelines.errors import UpstreamUnavailable, UrlNotAllowed
from pipelines.outbound import OutboundPolicy
from pipelines.webhooks import SIGNATURE_HEADER, deliver, sign

# The receiver listens on loopback, which only this policy lets through.
LOOPBACK_OK = OutboundPolicy(allow_private=True)


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    _Receiver.received = []
    _Receiver.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver
    server.shutdown()
    server.server_close()


def test_signature_is_the_hmac_sha256_of_the_body() -> None:
    expected = hmac.new(b"s3cret", b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign(b'{"a":1}', "s3cret") == f"sha256={expected}"


def test_delivery_posts_the_job_with_a_verifiable_signature(receiver) -> None:
    url, handler = receiver
    assert deliver(url, {"id": "j1", "status": "succeeded"}, "s3cret", policy=LOOPBACK_OK) == 200
    headers, body = handler.received[0]
    assert body == b'{"id":"j1","status":"succeeded"}'
    assert headers[SIGNATURE_HEADER] == sign(body, "s3cret")


def test_a_receiver_5xx_is_transient_so_the_delivery_is_retried(receiver) -> None:
    url, handler = receiver
    handler.status = 503
    with pytest.raises(UpstreamUnavailable):
        deliver(url, {"id": "j1"}, "s3cret", policy=LOOPBACK_OK)


def test_a_receiver_4xx_is_final_and_not_retried(receiver) -> None:
    url, handler = receiver
    handler.status = 410
    assert deliver(url, {"id": "j1"}, "s3cret", policy=LOOPBACK_OK) == 410


def test_an_unreachable_receiver_is_transient() -> None:
    with pytest.raises(UpstreamUnavailable):
        deliver("http://127.0.0.1:9/hook", {"id": "j1"}, "s3cret", policy=LOOPBACK_OK,
                timeout_s=1)


def test_a_loopback_receiver_is_refused_without_the_operators_setting(receiver) -> None:
    url, handler = receiver
    with pytest.raises(UrlNotAllowed):
        deliver(url, {"id": "j1"}, "s3cret", policy=OutboundPolicy())
    assert handler.received == []


def test_userinfo_in_the_url_is_not_sent_as_credentials(receiver) -> None:
    url, handler = receiver
    with_userinfo = url.replace("http://", "http://alice:hunter2@")
    assert deliver(with_userinfo, {"id": "j1"}, "s3cret", policy=LOOPBACK_OK) == 200
    headers, _ = handler.received[0]
    assert "Authorization" not in headers


# ------------------------------------------------------------------ subscription deliveries
# pipelines/webhook_events.py: one attempt of a subscription's delivery, and its backoff.

def test_a_subscription_delivery_is_signed_and_names_its_event_and_id(receiver) -> None:
    url, handler = receiver
    handler.status = 204
    payload = {"event": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {}}
    outcome = webhook_events.attempt("d-1", url, payload, "whsec_x", policy=LOOPBACK_OK,
                                     timeout_s=5)
    assert outcome == webhook_events.Attempt("delivered", status_code=204)
    headers, body = handler.received[0]
    assert headers[SIGNATURE_HEADER] == sign(body, "whsec_x")
    assert headers["X-Switchyard-Event"] == "job.succeeded"
    assert headers["X-Switchyard-Delivery"] == "d-1"


@pytest.mark.parametrize(("status", "outcome"), [(500, "retry"), (503, "retry"),
                                                 (429, "retry"), (404, "failed"),
                                                 (410, "failed")])
def test_a_subscription_delivery_retries_5xx_and_429_and_gives_up_on_other_4xx(
        receiver, status: int, outcome: str) -> None:
    url, handler = receiver
    handler.status = status
    result = webhook_events.attempt("d-1", url, {"event": "e"}, "k", policy=LOOPBACK_OK,
                                    timeout_s=5)
    assert (result.outcome, result.status_code) == (outcome, status)
    assert result.error == f"receiver answered {status}"


def test_a_subscription_delivery_to_a_refused_address_fails_without_sending(receiver) -> None:
    url, handler = receiver
    result = webhook_events.attempt("d-1", url, {"event": "e"}, "k", policy=OutboundPolicy(),
                                    timeout_s=5)
    assert result.outcome == "failed" and "private or loopback" in (result.error or "")
    assert handler.received == []


def test_an_unreachable_subscription_receiver_is_retried() -> None:
    result = webhook_events.attempt("d-1", "http://127.0.0.1:9/hook", {"event": "e"}, "k",
                                    policy=LOOPBACK_OK, timeout_s=1)
    assert result.outcome == "retry" and result.status_code is None


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [webhook_events.backoff_s(n, 1.0, 5.0) for n in range(1, 6)] == [1, 2, 4, 5, 5]
