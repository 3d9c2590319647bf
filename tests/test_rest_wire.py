"""The curl transport (adapters.fhir_rest.wire) against real loopback servers, no mocks: a small
threaded raw-socket HTTP/1.1 server whose answer is chosen by the request path (normal with
keep-alive, reset, closed without answer, cut short, stalled, chunked, gzip, corrupt gzip, a
redirect, an interim 100), a TLS one, and the upstream `fhir-gateway serve` of the e2e tests,
read over curl and over httpx's transport with the same results."""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.fhir_rest.client import UpstreamClient
from adapters.fhir_rest.settings import RestSettings
from adapters.fhir_rest.wire import CurlTransport
from tests.rest_support import seeded_upstream

FJ = "application/fhir+json"
FAST = httpx.Timeout(connect=1.0, read=1.0, write=1.0, pool=1.0)


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None


def patient(pid: str) -> bytes:
    return orjson.dumps({"resourceType": "Patient", "id": pid})


def answer(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawServer:
    """HTTP/1.1 by hand on 127.0.0.1, each connection in a thread; what it answers depends on
    the path. It records every request and counts connections."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.seen: list[Seen] = []
        self.connections = 0
        self.tokens = 0
        self.arrived = threading.Condition()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def wait_for(self, target: str, timeout: float = 5.0) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: any(s.target == target for s in self.seen),
                                         timeout), f"{target} never arrived"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections),
                             daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(10)
        reader = None
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers = []
                while (h := reader.readline()) not in (b"\r\n", b"\n", b""):
                    key, _, value = h.decode("latin-1").partition(":")
                    headers.append((key.strip(), value.strip()))
                seen = Seen(method, target, headers, b"", number)
                length = seen.header("Content-Length")
                seen.body = reader.read(int(length)) if length else b""
                with self.arrived:
                    self.seen.append(seen)
                    self.arrived.notify_all()
                if not self._answer(conn, reader, seen):
                    return
        except (OSError, ValueError):
            return
        finally:
            if reader is not None:
                reader.close()
            conn.close()

    def _answer(self, conn: socket.socket, reader, seen: Seen) -> bool:
        """Send the answer for `seen`; False closes the connection."""
        path = seen.target.split("?")[0]
        kind, _, arg = path.strip("/").partition("/")
        ctype = f"Content-Type: {FJ}"
        if kind == "ok":
            body = b"" if seen.method == "HEAD" else patient(arg)
            head = answer("200 OK", patient(arg), ctype)
            conn.sendall(head[:len(head) - len(patient(arg))] + body)
        elif kind == "ok-then-close":  # as a server whose keep-alive timeout ran out
            conn.sendall(answer("200 OK", patient(arg), ctype))
            return False
        elif kind == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif kind == "close":
            return False
        elif kind == "short":
            conn.sendall(answer("200 OK", b'{"resourceType": "Pat', ctype).replace(
                b"Content-Length: 21", b"Content-Length: 500"))
            return False
        elif kind == "stall":
            reader.read(1)  # until the client gives up and closes
            return False
        elif kind == "chunked":
            body = patient(arg)
            parts = [body[:5], body[5:12], body[12:]]
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
            conn.sendall(f"HTTP/1.1 200 OK\r\n{ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
                         .encode() + chunks)
        elif kind == "gzip":
            conn.sendall(answer("200 OK", gzip.compress(patient(arg)), ctype,
                                "Content-Encoding: gzip"))
        elif kind == "coding":  # a coding nobody registered: read as it is, as httpx does
            conn.sendall(answer("200 OK", patient(arg), ctype, "Content-Encoding: UTF-8"))
        elif kind == "badgzip":
            conn.sendall(answer("200 OK", b"this is not gzip at all", ctype,
                                "Content-Encoding: gzip"))
        elif kind == "redirect":
            conn.sendall(answer("302 Found", b"", "Location: /ok/moved"))
        elif kind == "continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" +
                         answer("201 Created", patient(arg), ctype, "X-Final: yes"))
        elif kind == "token":  # a token endpoint handing out tok-1, tok-2, ...
            with self.arrived:
                self.tokens += 1
                body = orjson.dumps({"access_token": f"tok-{self.tokens}",
                                     "token_type": "bearer", "expires_in": 300})
            conn.sendall(answer("200 OK", body, "Content-Type: application/json"))
        elif kind == "wants":  # 200 only with the token named in the path, else 401
            if seen.header("Authorization") == f"Bearer {arg}":
                conn.sendall(answer("200 OK", patient(arg), ctype))
            else:
                conn.sendall(answer("401 Unauthorized", b"", 'WWW-Authenticate: Bearer'))
        elif kind == "echo":
            conn.sendall(answer("201 Created", seen.body,
                                f"Content-Type: {seen.header('Content-Type') or 'x/none'}"))
        else:
            conn.sendall(answer("404 Not Found", b""))
        return True


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.close()


@pytest.fixture
def transport() -> Iterator[CurlTransport]:
    tr = CurlTransport(max_connections=4, timeout=FAST)
    yield tr
    tr.close()


def get(tr: httpx.BaseTransport, url: str, method: str = "GET", **kw) -> httpx.Response:
    resp = tr.handle_request(httpx.Request(method, url, **kw))
    resp.read()
    return resp


def test_a_normal_answer_over_one_kept_alive_connection(server):
    tr = CurlTransport(max_connections=4, timeout=FAST)
    try:
        before = server.connections
        for i in range(20):
            resp = get(tr, f"{server.base}/ok/p{i}", headers={"Accept": FJ})
            assert resp.status_code == 200
            assert resp.reason_phrase == "OK"
            assert resp.http_version == "HTTP/1.1"
            assert resp.headers["Content-Type"] == FJ
            assert orjson.loads(resp.content) == {"resourceType": "Patient", "id": f"p{i}"}
            assert resp.num_bytes_downloaded == len(patient(f"p{i}"))
        assert server.connections - before == 1
        mine = [s for s in server.seen if s.target.startswith("/ok/p")]
        assert len({s.connection for s in mine[-20:]}) == 1
    finally:
        tr.close()


@pytest.mark.parametrize(("path", "error"), [
    ("/reset/1", httpx.ReadError),
    ("/close/1", httpx.RemoteProtocolError),
    ("/short/1", httpx.RemoteProtocolError),
])
def test_a_broken_answer_is_an_httpx_error_and_the_next_request_works(server, transport,
                                                                       path, error):
    get(transport, f"{server.base}/ok/warm")  # a kept-alive connection exists
    request = httpx.Request("GET", f"{server.base}{path}")
    with pytest.raises(error) as info:
        transport.handle_request(request)
    assert info.value.request is request
    for i in range(3):
        resp = get(transport, f"{server.base}/ok/after{i}")
        assert resp.status_code == 200 and orjson.loads(resp.content)["id"] == f"after{i}"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
def test_a_connection_the_server_closed_while_idle_is_not_reused(server, method):
    tr = CurlTransport(max_connections=1, timeout=FAST)
    try:
        assert get(tr, f"{server.base}/ok-then-close/idle").status_code == 200
        server.wait_for("/ok-then-close/idle")
        target = f"/echo/after-idle-{method.lower()}-{len(server.seen)}"
        resp = get(tr, f"{server.base}{target}", method, content=b'{"a": 1}')
        assert resp.status_code == 201 and resp.content == b'{"a": 1}'
        assert sum(1 for s in server.seen if s.target == target) == 1
    finally:
        tr.close()


def test_a_reset_on_a_fresh_connection_too(server):
    tr = CurlTransport(max_connections=1, timeout=FAST)
    try:
        with pytest.raises(httpx.ReadError):
            tr.handle_request(httpx.Request("GET", f"{server.base}/reset/first"))
        assert get(tr, f"{server.base}/ok/x").status_code == 200
    finally:
        tr.close()


@pytest.mark.parametrize("reused", [False, True])
def test_a_stall_beyond_the_read_timeout_of_the_request_is_a_read_timeout(server, reused):
    tr = CurlTransport(max_connections=1)  # defaults: read 20 s; the request says 1 s
    try:
        if reused:
            get(tr, f"{server.base}/ok/before-stall")
        request = httpx.Request("GET", f"{server.base}/stall/1",
                                extensions={"timeout": FAST.as_dict()})
        with pytest.raises(httpx.ReadTimeout) as info:
            tr.handle_request(request)
        assert info.value.request is request
        assert get(tr, f"{server.base}/ok/after-stall").status_code == 200
    finally:
        tr.close()


def test_a_chunked_answer_is_joined(server, transport):
    resp = get(transport, f"{server.base}/chunked/c1")
    assert resp.status_code == 200
    assert orjson.loads(resp.content) == {"resourceType": "Patient", "id": "c1"}
    assert "Transfer-Encoding" in resp.headers


def test_gzip_is_decoded_by_httpx_and_a_corrupt_one_fails_at_read(server, transport):
    resp = get(transport, f"{server.base}/gzip/g1")
    assert resp.headers["Content-Encoding"] == "gzip"
    assert orjson.loads(resp.content) == {"resourceType": "Patient", "id": "g1"}
    assert resp.num_bytes_downloaded == len(gzip.compress(patient("g1")))
    bad = transport.handle_request(httpx.Request("GET", f"{server.base}/badgzip/1"))
    with pytest.raises(httpx.DecodingError):
        bad.read()
    assert get(transport, f"{server.base}/ok/after-gzip").status_code == 200


def test_a_redirect_is_not_followed(server, transport):
    before = sum(1 for s in server.seen if s.target == "/ok/moved")
    resp = get(transport, f"{server.base}/redirect/1")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/ok/moved"
    assert sum(1 for s in server.seen if s.target == "/ok/moved") == before


def test_the_headers_are_those_of_the_last_block_after_an_interim_100(server, transport):
    resp = get(transport, f"{server.base}/continue/i1")
    assert resp.status_code == 201
    assert resp.headers["X-Final"] == "yes"
    assert "X-Interim" not in resp.headers
    assert orjson.loads(resp.content)["id"] == "i1"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_body_and_headers_arrive_intact(server, transport, method):
    body = orjson.dumps({"resourceType": "Observation", "status": "final",
                         "note": [{"text": "é" * 3000}]})  # over curl's 1 KB Expect limit
    target = f"/echo/{method.lower()}?a=1&b=x%20y"
    resp = get(transport, f"{server.base}{target}", method, content=body, headers={
        "Content-Type": FJ, "If-Match": 'W/"3"', "X-Empty": "", "Accept": FJ})
    assert resp.status_code == 201 and resp.content == body
    seen = next(s for s in reversed(server.seen) if s.target == target)
    assert seen.method == method
    assert seen.body == body
    assert seen.header("Content-Length") == str(len(body))
    assert seen.header("Content-Type") == FJ
    assert seen.header("If-Match") == 'W/"3"'
    assert seen.header("X-Empty") == ""
    assert seen.header("Host") == f"127.0.0.1:{server.port}"
    assert seen.header("Expect") is None
    assert seen.header("Accept-Encoding") is None  # curl asks for no encoding of its own
    assert [k.lower() for k, _ in seen.headers].count("content-length") == 1
    assert seen.header("User-Agent") is None  # none was given: not pycurl's either


@pytest.mark.parametrize("headers", [{"If-Match": 'W/"1"\r\nX-Injected: yes'},
                                     {"If-Match": 'W/"1"\nX-Injected: yes'},
                                     {"X-Injected: yes\r\nX-Name": "v"}])
def test_a_header_with_a_line_break_is_refused_not_sent(server, transport, headers):
    target = f"/ok/inject-{len(server.seen)}"
    with pytest.raises(httpx.LocalProtocolError):
        get(transport, f"{server.base}{target}", headers=headers)
    assert not any(s.target == target or s.header("X-Injected") for s in server.seen)
    assert get(transport, f"{server.base}/ok/after-refusal").status_code == 200


def test_delete_and_head_without_a_body(server, transport):
    resp = get(transport, f"{server.base}/ok/d1", "DELETE")
    assert resp.status_code == 200
    seen = server.seen[-1]
    assert (seen.method, seen.target, seen.body) == ("DELETE", "/ok/d1", b"")
    assert seen.header("Content-Length") is None
    head = get(transport, f"{server.base}/ok/h1", "HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(patient("h1")))
    assert get(transport, f"{server.base}/ok/after-head").content == patient("after-head")


def test_a_post_is_never_sent_twice_when_the_server_closes_without_answering(server, transport):
    get(transport, f"{server.base}/ok/warm")  # curl would resend on a dead reused connection
    with pytest.raises(httpx.RemoteProtocolError):
        get(transport, f"{server.base}/close/post-once", "POST", content=b"{}")
    assert sum(1 for s in server.seen if s.target == "/close/post-once") == 1


def test_a_refused_connection_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    tr = CurlTransport(timeout=FAST)
    try:
        with pytest.raises(httpx.ConnectError):
            tr.handle_request(httpx.Request("GET", f"http://127.0.0.1:{port}/x"))
    finally:
        tr.close()


def test_a_tls_handshake_that_never_answers_is_a_connect_timeout():
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody speaks TLS
    tr = CurlTransport(timeout=httpx.Timeout(connect=0.5, read=5.0, write=5.0, pool=1.0))
    try:
        with pytest.raises(httpx.ConnectTimeout):
            tr.handle_request(httpx.Request("GET", f"https://127.0.0.1:"
                                                   f"{silent.getsockname()[1]}/x"))
    finally:
        tr.close()
        silent.close()


def test_pool_exhaustion_is_a_pool_timeout_and_the_handle_comes_back(server):
    tr = CurlTransport(max_connections=1, timeout=httpx.Timeout(
        connect=1.0, read=2.0, write=1.0, pool=0.2))
    errors: list[Exception] = []

    def stalled() -> None:
        try:
            tr.handle_request(httpx.Request("GET", f"{server.base}/stall/pool"))
        except httpx.HTTPError as exc:
            errors.append(exc)

    worker = threading.Thread(target=stalled)
    worker.start()
    try:
        server.wait_for("/stall/pool")
        request = httpx.Request("GET", f"{server.base}/ok/waiting")
        with pytest.raises(httpx.PoolTimeout) as info:
            tr.handle_request(request)
        assert info.value.request is request
        worker.join(10)
        assert [type(e) for e in errors] == [httpx.ReadTimeout]
        assert get(tr, f"{server.base}/ok/free-again").status_code == 200
    finally:
        worker.join(10)
        tr.close()


def test_eight_threads_share_the_transport_and_each_gets_its_own_answer(server):
    tr = CurlTransport(max_connections=4, timeout=FAST)
    wrong: list[str] = []

    def work(n: int) -> None:
        for i in range(15):
            pid = f"t{n}-{i}"
            try:
                resp = get(tr, f"{server.base}/ok/{pid}")
                if resp.status_code != 200 or orjson.loads(resp.content)["id"] != pid:
                    wrong.append(pid)
            except httpx.HTTPError as exc:
                wrong.append(f"{pid}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        before = server.connections
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert wrong == []
        assert server.connections - before <= 4  # at most max_connections handles
    finally:
        tr.close()


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x",
                                 "gopher://127.0.0.1/x"])
def test_only_http_and_https_are_spoken(transport, url):
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.handle_request(httpx.Request("GET", url))


def test_a_closed_transport_refuses_requests(server):
    tr = CurlTransport(timeout=FAST)
    assert get(tr, f"{server.base}/ok/1").status_code == 200
    tr.close()
    with pytest.raises(RuntimeError):
        tr.handle_request(httpx.Request("GET", f"{server.base}/ok/2"))


def test_backend_services_renews_its_token_once_on_a_401_over_curl(server):
    """The httpx.Auth flow driven by UpstreamClient itself: a 401 gets one retry with a new
    token (the token endpoint is reached over the same kind of wire)."""
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    client = UpstreamClient(RestSettings(
        base_url=server.base, retries=0, auth="backend-services", client_id="gw",
        private_key_pem=pem, token_url=f"{server.base}/token/x"))
    assert type(client._token_http._transport) is CurlTransport
    try:
        first = server.tokens
        wanted = f"tok-{first + 2}"
        resp = client.send("GET", f"wants/{wanted}")
        assert resp.status == 200 and resp.body["id"] == wanted
        gets = [s for s in server.seen if s.target == f"/wants/{wanted}"]
        assert [g.header("Authorization") for g in gets] == [
            f"Bearer tok-{first + 1}", f"Bearer {wanted}"]
        posts = [s for s in server.seen if s.target == "/token/x"][-2:]
        assert all(p.method == "POST" and b"client_assertion=" in p.body for p in posts)
        assert server.tokens == first + 2
    finally:
        client.close()


# -- TLS ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[RawServer, Path]]:
    """A TLS server with a certificate for 127.0.0.1 from its own CA; yields the CA file."""
    where = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca for 127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(where / "cert.pem", where / "key.pem")
    srv = RawServer(tls=ctx)
    yield srv, where / "cert.pem"
    srv.close()


def test_tls_with_a_trusted_certificate_works_and_keeps_the_connection(tls_server):
    srv, ca = tls_server
    tr = CurlTransport(timeout=FAST, cainfo=str(ca))
    try:
        before = srv.connections
        for i in range(5):
            resp = get(tr, f"{srv.base}/ok/tls{i}")
            assert resp.status_code == 200 and orjson.loads(resp.content)["id"] == f"tls{i}"
        assert srv.connections - before == 1
    finally:
        tr.close()


def test_tls_with_an_untrusted_certificate_is_a_connect_error(tls_server):
    srv, _ = tls_server
    tr = CurlTransport(timeout=FAST)  # certifi's CAs: this certificate is nobody's
    try:
        with pytest.raises(httpx.ConnectError):
            tr.handle_request(httpx.Request("GET", f"{srv.base}/ok/untrusted"))
    finally:
        tr.close()


# -- UpstreamClient over both wires, against the e2e tests' upstream -----------------------------

@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    up = seeded_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    up.stop()


def _clients(base: str) -> Iterator[UpstreamClient]:
    for kind in ("curl", "httpx"):
        client = UpstreamClient(RestSettings(base_url=base, retries=0, transport=kind))
        assert type(client.transport).__name__ == \
            ("CurlTransport" if kind == "curl" else "HTTPTransport")
        yield client


@pytest.mark.parametrize(("path", "params"), [
    ("Patient/pat-0001", None),
    ("Observation", [("patient", "pat-0001"), ("_count", "5")]),
    ("Observation", [("patient", "pat-0001"), ("_count", "20"), ("_sort", "-date")]),
    ("Patient/does-not-exist", None),
])
def test_upstream_client_reads_the_same_over_curl_and_httpx(upstream, path, params):
    answers = []
    for client in _clients(upstream.base):
        try:
            resp = client.send("GET", path, params=params)
            body = dict(resp.body or {})
            if body.get("resourceType") == "Bundle":
                body.pop("id", None)
                body.pop("meta", None)  # the time the page was made
            answers.append((resp.status, resp.headers.get("Content-Type"), body, resp.url))
        finally:
            client.close()
    assert answers[0][2], answers
    assert answers[0] == answers[1]


def test_upstream_client_over_curl_follows_a_next_link(upstream):
    client = UpstreamClient(RestSettings(base_url=upstream.base, retries=0))
    try:
        first = client.send("GET", "Observation", params=[("patient", "pat-0001"),
                                                           ("_count", "3")])
        assert first.status == 200 and len(first.body["entry"]) == 3
        link = next(li["url"] for li in first.body["link"] if li["relation"] == "next")
        second = client.send("GET", link)
        assert second.status == 200 and second.body["resourceType"] == "Bundle"
        ids = {e["resource"]["id"] for e in first.body["entry"]}
        assert ids.isdisjoint(e["resource"]["id"] for e in second.body["entry"])
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["curl", "httpx"])
def test_upstream_client_decodes_gzip_and_refuses_a_corrupt_one_over_both_wires(server, kind):
    """The client asks for gzip and reads the decoded body (curl decodes it, httpx.Response
    does for the httpx wire); a body that does not decode is the EHR's error, not an outage:
    no retry, and the circuit breaker does not count it."""
    from adapters.errors import UpstreamError

    client = UpstreamClient(RestSettings(base_url=server.base, transport=kind, retries=2,
                                         backoff=0.0, breaker_failures=1))
    try:
        resp = client.send("GET", "gzip/g2")
        assert resp.body == {"resourceType": "Patient", "id": "g2"}
        assert resp.raw == patient("g2")
        assert resp.headers["content-encoding"] == "gzip"  # any case
        asked = server.seen[-1].header("Accept-Encoding") or ""
        assert "gzip" in asked and asked.count("gzip") == 1, asked
        assert client.send("GET", "coding/u1").body == {"resourceType": "Patient", "id": "u1"}
        seen = len(server.seen)
        with pytest.raises(UpstreamError, match="could not be decoded"):
            client.send("GET", "badgzip/2")
        assert len(server.seen) == seen + 1  # asked once
        assert client.breaker.state == "closed"
        assert client.send("GET", "ok/after-bad-gzip").status == 200
    finally:
        client.close()


def test_upstream_client_joins_paths_and_queries_as_httpx_did(server):
    client = UpstreamClient(RestSettings(base_url=f"{server.base}/fhir/", retries=0))
    try:
        assert client.url("Patient/1") == f"{server.base}/fhir/Patient/1"
        assert client.url("/Observation", [("code", "http://loinc.org|1234-5"), ("a", "b c")]) \
            == f"{server.base}/fhir/Observation?code=http%3A%2F%2Floinc.org%7C1234-5&a=b+c"
        assert client.url("Observation?page=2&x=1", [("x", "2")]) == \
            f"{server.base}/fhir/Observation?page=2&x=2"
        # a raw space or non-ASCII character (an EHR's link) is percent-encoded
        assert client.url("Patient/a b") == f"{server.base}/fhir/Patient/a%20b"
        assert client.url("Patient?name=Zoë") == f"{server.base}/fhir/Patient?name=Zo%C3%AB"
        client.send("GET", "ok/Patient?name=Zoë")
        assert server.seen[-1].target == "/fhir/ok/Patient?name=Zo%C3%AB"
        # what httpx would do with a quote, a fragment or a dot segment: its URL writes them
        for odd in ('Patient/1/_history/a"b<c>', "Patient/1#frag", "Patient/1/_history/..",
                    "Patient/./1"):
            assert client.url(odd) == str(httpx.URL(f"{server.base}/fhir/{odd}")), odd
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["curl", "httpx"])
def test_a_request_that_cannot_be_sent_is_the_callers_mistake_not_the_ehrs(server, kind):
    """A header value with a line break (a Bundle's `ifMatch` can carry one) is refused as
    invalid, at once: no retry, and the circuit breaker does not count it as the EHR failing
    (two such requests would otherwise have opened it for everyone)."""
    from adapters.errors import Invalid
    from adapters.fhir_rest.client import UpstreamClient
    from adapters.fhir_rest.settings import RestSettings

    client = UpstreamClient(RestSettings(base_url=f"{server.base}/ok", transport=kind,
                                         retries=2, backoff=0.0, breaker_failures=2))
    try:
        seen = len(server.seen)
        for name in ("If-Match", "If-Match", "Accept-Encoding"):
            with pytest.raises(Invalid):
                client.send("PUT", "Patient/1", body={"resourceType": "Patient", "id": "1"},
                            headers={name: 'W/"1"\r\nX-Evil: 1'})
        assert len(server.seen) == seen  # nothing reached the server
        assert client.breaker.state == "closed"
        assert client.send("GET", "Patient/1").status == 200
    finally:
        client.close()


def test_an_idle_handle_keeps_no_answer_or_credentials(server, transport):
    """Back in the pool, a handle holds its connection only: not the last body (PHI) or the
    request's Authorization header (its callbacks and options are reset)."""
    import gc

    marker = b"idle-7f3a9c"
    resp = get(transport, f"{server.base}/ok/{marker.decode()}",
               headers={"Authorization": "Bearer s3cr3t"})
    assert resp.status_code == 200 and marker in resp.read()
    del resp
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, list) and any(
        isinstance(x, bytes) and marker in x for x in o)]
    assert kept == []


@pytest.mark.parametrize("kind", ["curl", "httpx"])
def test_a_configured_ca_file_is_what_both_wires_trust(tls_server, tmp_path, kind):
    """`fhir_rest.ca_file`: an EHR whose certificate a clinic's own CA signed is reached over
    either wire; without the setting the same EHR is refused (certifi's CAs do not know it)."""
    from adapters.fhir_rest.client import UpstreamClient, make_transport
    from adapters.fhir_rest.settings import RestSettings

    srv, ca = tls_server
    trusting = UpstreamClient(RestSettings(base_url=f"{srv.base}/ok", transport=kind,
                                           ca_file=str(ca), retries=0))
    try:
        assert trusting.send("GET", "ca1").body["id"] == "ca1"
    finally:
        trusting.close()
    default = make_transport(RestSettings(base_url=srv.base, transport=kind))
    try:
        with pytest.raises(httpx.ConnectError):
            default.handle_request(httpx.Request("GET", f"{srv.base}/ok/ca2"))
    finally:
        default.close()
