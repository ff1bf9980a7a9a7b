"""pipelines/outbound.py: which addresses outbound requests may reach, and the pinned connect.

Private, link-local and metadata addresses appear here only as plain values given to the
guard; the only connections made go to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines.errors import HostNotResolved, UrlNotAllowed
from pipelines.outbound import OutboundPolicy, check, parse_url, post, refusal

DEFAULT = OutboundPolicy()
PRIVATE_OK = OutboundPolicy(allow_private=True)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(value)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "100.64.0.1", "fc00::1", "fd00::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
    "2002:7f00:1::", "64:ff9b::a00:1",
])
def test_private_and_loopback_addresses_are_refused_unless_allowed(address: str) -> None:
    assert refusal(_ip(address), DEFAULT) == "a private or loopback address"
    assert refusal(_ip(address), PRIVATE_OK) is None


@pytest.mark.parametrize("address", [
    "169.254.169.254", "fd00:ec2::254", "169.254.1.1", "fe80::1", "::ffff:169.254.169.254",
])
def test_link_local_and_metadata_addresses_are_refused_even_when_private_is_allowed(
        address: str) -> None:
    for policy in (DEFAULT, PRIVATE_OK, OutboundPolicy.of(False, ["169.254.169.254"])):
        assert refusal(_ip(address), policy) == "a link-local or cloud metadata address"


@pytest.mark.parametrize("address", ["0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "ff02::1",
                                     "240.0.0.1", "255.255.255.255"])
def test_unroutable_addresses_are_always_refused(address: str) -> None:
    assert refusal(_ip(address), PRIVATE_OK) == "not a routable unicast address"


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(_ip(address), DEFAULT) is None


def test_an_allowed_host_may_resolve_to_a_private_address_but_others_may_not() -> None:
    policy = OutboundPolicy.of(False, ["Models.Internal"])
    assert refusal(_ip("10.0.0.5"), policy, "models.internal") is None
    assert refusal(_ip("10.0.0.5"), policy, "other.internal") is not None


def test_userinfo_and_fragments_are_dropped_and_only_http_is_accepted() -> None:
    url = parse_url("https://user:secret@hooks.example:8443/path?q=1#frag")
    assert str(url) == "https://hooks.example:8443/path?q=1"
    for bad in ("ftp://hooks.example/", "file:///etc/passwd", "http:///nohost", "gopher://x/"):
        with pytest.raises(UrlNotAllowed):
            parse_url(bad)


def _resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]
    return resolve


def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    resolve = _resolver({"mixed.example": ["93.184.216.34", "10.0.0.7"],
                         "public.example": ["93.184.216.34"]})
    with pytest.raises(UrlNotAllowed, match="private or loopback"):
        check("http://mixed.example/hook", DEFAULT, resolve)
    target = check("http://public.example/hook", DEFAULT, resolve)
    assert str(target.pinned_url) == "http://93.184.216.34/hook"
    assert target.request_headers({})["Host"] == "public.example"


def test_a_name_that_does_not_resolve_is_refused_as_such() -> None:
    with pytest.raises(HostNotResolved):
        check("http://nowhere.example/", DEFAULT, _resolver({}))


@pytest.mark.parametrize("url", [
    "http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://localhost/", "http://[::1]/",
])
def test_every_spelling_of_loopback_is_refused_by_the_system_resolver(url: str) -> None:
    # The system resolver answers these without the network (literals, /etc/hosts).
    with pytest.raises(UrlNotAllowed):
        check(url, DEFAULT)


class _Receiver(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(dict(self.headers))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver_port() -> Iterator[int]:
    _Receiver.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_the_request_goes_to_the_checked_address_with_the_names_host_header(
        receiver_port: int) -> None:
    # `hooks.example` has no DNS answer anywhere: the request can only arrive because it
    # was sent to the address the check pinned, not to a fresh resolution of the name.
    target = check(f"http://hooks.example:{receiver_port}/hook", PRIVATE_OK,
                   _resolver({"hooks.example": ["127.0.0.1"]}))
    response = post(target, content=b"{}", headers={"Content-Type": "application/json"},
                    timeout_s=5)
    assert response.status_code == 204
    assert _Receiver.seen[0]["Host"] == f"hooks.example:{receiver_port}"


def test_a_rebinding_name_cannot_switch_the_target_after_the_check() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def rebinding(host: str, port: int) -> Sequence[str]:
        return next(answers)

    target = check("http://rebind.example/hook", DEFAULT, rebinding)
    # The one resolution was checked and pinned; the second answer is never asked for.
    assert target.address == _ip("93.184.216.34")
    assert target.pinned_url.host == "93.184.216.34"
