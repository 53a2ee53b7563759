"""remote_fetch on loopback servers: a URL off the allow-list is never contacted (the counting
server sees no connection), a redirect is followed only to an allowed host, the body is bounded,
and the host's answers are named conditions."""
from __future__ import annotations

import http.server
import socket
import threading

import pytest

import remote_fetch
from href_policy import HrefPolicy
from untrusted import CountingServer


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[str] = []

    def log_message(self, *args) -> None:  # noqa: D102
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.routes, _Handler.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def counting():
    server = CountingServer()
    yield server
    server.close()


def _allowed(*hosts: str):
    return HrefPolicy.of(allowed_hosts=hosts).url_allowed


def test_an_allowed_host_is_fetched_whole(site, tmp_path):
    server, url = site
    _Handler.routes["/a.tif"] = (200, {"ETag": '"v1"'}, b"x" * 5000)
    host = url.removeprefix("http://")
    fetched = remote_fetch.fetch_to_path(f"{url}/a.tif", tmp_path / "a.tif", allowed=_allowed(host), max_bytes=10_000)
    assert (tmp_path / "a.tif").read_bytes() == b"x" * 5000
    assert fetched.size == 5000 and fetched.etag == '"v1"' and len(fetched.sha256) == 64
    assert remote_fetch.fetch_bytes(f"{url}/a.tif", allowed=_allowed(host), max_bytes=10_000) == b"x" * 5000


def test_a_host_off_the_list_is_never_contacted(counting, tmp_path):
    with pytest.raises(remote_fetch.RemoteRefused, match="allow-list"):
        remote_fetch.fetch_to_path(counting.url(), tmp_path / "x", allowed=_allowed("127.0.0.1:1"), max_bytes=100)
    assert counting.connections == 0 and not (tmp_path / "x").exists()


def test_a_redirect_to_a_host_off_the_list_is_refused_before_connecting(site, counting, tmp_path):
    server, url = site
    _Handler.routes["/moved.tif"] = (302, {"Location": counting.url("stolen.tif")}, b"")
    _Handler.routes["/here.tif"] = (301, {"Location": "/there.tif"}, b"")
    _Handler.routes["/there.tif"] = (200, {}, b"ok")
    allowed = _allowed(url.removeprefix("http://"))
    with pytest.raises(remote_fetch.RemoteRefused, match="redirects to"):
        remote_fetch.fetch_to_path(f"{url}/moved.tif", tmp_path / "x", allowed=allowed, max_bytes=100)
    assert counting.connections == 0 and not (tmp_path / "x").exists()
    assert remote_fetch.fetch_bytes(f"{url}/here.tif", allowed=allowed, max_bytes=100) == b"ok"


def test_bodies_are_bounded_and_answers_named(site, tmp_path):
    server, url = site
    allowed = _allowed(url.removeprefix("http://"))
    _Handler.routes["/big.tif"] = (200, {}, b"x" * 2000)
    _Handler.routes["/forbidden.tif"] = (403, {}, b"")
    _Handler.routes["/broken.tif"] = (503, {}, b"")
    for path, error in (("/big.tif", remote_fetch.RemoteTooLarge), ("/missing.tif", remote_fetch.RemoteNotFound),
                        ("/forbidden.tif", remote_fetch.RemoteRejected), ("/broken.tif", remote_fetch.RemoteUnavailable)):
        with pytest.raises(error, match=path.strip("/")):
            remote_fetch.fetch_to_path(f"{url}{path}", tmp_path / "x", allowed=allowed, max_bytes=1000)
        assert not (tmp_path / "x").exists()
    assert _Handler.seen.count("/broken.tif") == 3  # a host's fault is retried, then named


def test_an_unreachable_host_is_named_after_retries(tmp_path):
    with socket.socket() as held:  # bound, never listening: every connection is refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(remote_fetch.RemoteUnavailable, match="ConnectionRefusedError"):
            remote_fetch.fetch_bytes(f"http://127.0.0.1:{port}/x.json", allowed=_allowed(f"127.0.0.1:{port}"),
                                     max_bytes=100)
