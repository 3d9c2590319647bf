"""The runner's command line: exit 2 with one line for a server that is down or answers
garbage, --list, bad options; both entry points (python -m conformance, fhir-gateway)."""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from conformance.cli import DEFAULT_BASE, main
from conformance.model import all_checks
from tests.conftest import ROOT, free_port

GARBAGE = {
    "/html/metadata": (200, "text/html", b"<html><body>Welcome to nginx</body></html>"),
    "/badjson/metadata": (200, "application/fhir+json", b'{"resourceType": "Capab'),
    "/notfhir/metadata": (200, "application/json", b'{"hello": "world"}'),
    "/five/metadata": (503, "text/plain", b"Service Unavailable"),
    "/halfway/metadata": (200, "application/fhir+json", json.dumps({
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "date": "2026-01-01", "fhirVersion": "4.0.1", "format": ["json"],
        "rest": [{"mode": "server", "resource": [{
            "type": "Patient", "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": "family", "type": "string"}]}]}]}).encode()),
}


class Quiet(WSGIRequestHandler):
    def log(self, *args, **kwargs) -> None:  # keep the runner's stderr its own
        pass


@pytest.fixture(scope="module")
def garbage_server() -> Iterator[str]:
    """A real HTTP server on loopback that answers everything with something not FHIR."""

    @Request.application
    def app(request: Request) -> Response:
        status, ctype, body = GARBAGE.get(request.path, (404, "text/plain", b"nope"))
        return Response(body, status=status, content_type=ctype)

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def one_line_exit_2(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "Traceback" not in err
    assert err.startswith("conformance: cannot run: ")
    return err


def test_server_down_is_exit_2_with_one_line(capsys):
    err = one_line_exit_2(capsys, ["--base", f"http://127.0.0.1:{free_port()}/fhir",
                                   "--timeout", "3"])
    assert "cannot reach" in err and "ConnectError" in err


@pytest.mark.parametrize("path,shown", [("html", "text/html"), ("badjson", "invalid JSON"),
                                        ("notfhir", "not FHIR JSON"), ("five", "503")])
def test_garbage_is_exit_2_with_one_line(capsys, garbage_server, path, shown):
    err = one_line_exit_2(capsys, ["--base", f"{garbage_server}/{path}"])
    assert shown in err


def test_bad_options_are_exit_2(capsys, garbage_server):
    assert "http(s) URL" in one_line_exit_2(capsys, ["--base", "ftp://example.org/fhir"])
    assert "USER:PASSWORD" in one_line_exit_2(capsys, ["--base", f"{garbage_server}/html",
                                                       "--patient-login", "nocolon"])


def test_unknown_group_is_exit_2(capsys, tmp_path):
    # the check selection is validated before any request is made
    err = one_line_exit_2(capsys, ["--base", f"http://127.0.0.1:{free_port()}/fhir",
                                   "--groups", "read,nonsense"])
    assert "nonsense" in err


def test_list_names_every_check_with_group_severity_and_spec(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    checks = all_checks()
    assert len(out) == len(checks) > 40
    for line, chk in zip(out, checks, strict=True):
        cols = line.split()
        assert cols == [chk.id, chk.group, chk.severity.value, chk.spec]
        assert chk.spec.startswith("https://")
    assert {c.group for c in checks} == {"capability", "read", "search", "write", "http",
                                         "smart", "access", "portal", "validity"}
    assert len({c.id for c in checks}) == len(checks)


def test_default_base_is_the_public_hapi_r4_server():
    assert DEFAULT_BASE == "https://hapi.fhir.org/baseR4"


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "conformance"],
                                 [str(ROOT / ".venv" / "bin" / "fhir-gateway"), "conformance"]])
def test_both_entry_points_exit_2_when_down(cmd):
    if not (ROOT / ".venv" / "bin" / "fhir-gateway").exists() and "conformance" == cmd[-1]:
        pytest.skip("fhir-gateway is not installed in .venv")
    done = subprocess.run([*cmd, "--base", f"http://127.0.0.1:{free_port()}/fhir"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("conformance: cannot run: cannot reach")
    assert "Traceback" not in done.stderr


def test_fhir_metadata_then_garbage_fails_checks_without_a_traceback(capsys, garbage_server):
    """A statement at /metadata, then an HTML page for everything else: the checks fail
    (or skip) one by one, the run ends with exit 1 and the summary."""
    assert main(["--base", f"{garbage_server}/halfway", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "FAIL capability.interactions-answered" in captured.out
    assert "Result: required checks failed" in captured.out


class _HangUp(socketserver.BaseRequestHandler):
    """Answers /metadata, then hangs up on every other request without a word."""

    def handle(self) -> None:
        head = self.request.recv(65536).decode("latin-1")
        if " /fhir/metadata" in head.split("\r\n", 1)[0]:
            body = GARBAGE["/halfway/metadata"][2]
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                                 b"Connection: close\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_a_server_that_stops_answering_mid_run_is_exit_2(capsys):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HangUp)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        err = one_line_exit_2(capsys, ["--base", f"http://127.0.0.1:{server.server_address[1]}"
                                       "/fhir", "--quiet"])
    finally:
        server.shutdown()
        server.server_close()
    assert "stopped answering during the run" in err


def test_an_empty_server_gets_data_to_check_with_only_when_writes_are_allowed(tmp_path, capsys):
    """With --allow-writes the runner creates a Patient and an Observation to read and search
    (and deletes them after); without it, the data checks skip and say why."""
    from tests.conftest import start_live_gateway

    live, stop = start_live_gateway(tmp_path, f"sqlite:///{tmp_path / 'ehr.sqlite3'}")
    try:
        out = tmp_path / "report"
        assert main(["--base", live.base, "--groups", "read,search", "--quiet",
                     "--report", str(out)]) == 0
        results = {r["id"]: r for r in json.loads((out / "report.json").read_text())["results"]}
        assert results["read.read"]["status"] == "skip"
        assert "found no resource" in results["read.read"]["message"]
        assert main(["--base", live.base, "--groups", "read,search", "--allow-writes",
                     "--quiet", "--report", str(out)]) == 0
        results = {r["id"]: r for r in json.loads((out / "report.json").read_text())["results"]}
        for check_id in ("read.read", "read.vread", "read.history", "read.gone",
                         "search.date-prefixes", "search.params-on-data"):
            assert results[check_id]["status"] == "pass", results[check_id]["message"]
        assert live.get("Patient", params={"_summary": "count"}).json()["total"] == 0
        assert live.get("Observation", params={"_summary": "count"}).json()["total"] == 0
    finally:
        stop()


def test_the_runner_imports_nothing_from_the_server_side():
    """conformance/ speaks HTTP only: no import of fhir_gateway, smart_launch, adapters or
    mappings anywhere in it (the one arrow allowed is fhir_gateway.cli -> conformance.cli)."""
    import ast

    server = {"fhir_gateway", "smart_launch", "adapters", "mappings"}
    files = sorted((ROOT / "conformance").rglob("*.py"))
    assert len(files) > 15
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in server, f"{path}: imports {name}"
