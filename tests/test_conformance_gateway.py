"""The runner against this gateway (embedded adapter, SMART on), with tokens from its own
real SMART launch as two patients: every required check passes, nothing it wrote is left,
and the HTML report renders in headless Chromium (screenshot in var/artifacts/)."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET

import httpx
import pytest

from conformance.cli import main
from tests.conformance_support import (
    ARTIFACTS,
    CONFIDENTIAL_SECRET,
    add_backend_client,
    render_in_chromium,
)
from tests.conftest import start_live_gateway
from tests.smart_support import PASSWORD, REDIRECT, smart_env_for


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The usual SMART cast (tests.smart_support) on a gateway seeded relative to today, so
    its free Slots and refillable prescriptions lie ahead for the portal group."""
    from fhir_gateway.synthetic import generate

    data = tmp_path_factory.mktemp("gateway")
    live, stop = start_live_gateway(data, f"sqlite:///{data / 'ehr.sqlite3'}", auth=True)
    live.adapter.load(generate(3, 7, dt.date.today()))
    smart = smart_env_for(live)
    yield smart
    smart.browser.close()
    stop()


@pytest.fixture(scope="module")
def green_run(env, tmp_path_factory):
    env.smart.clients.add("app-confidential", "symmetric", secret=CONFIDENTIAL_SECRET,
                          redirect_uris=[REDIRECT])
    key = add_backend_client(env.smart, tmp_path_factory.mktemp("backend"))
    out = tmp_path_factory.mktemp("report")
    code = main(["--base", env.base, "--smart-client", "app-confidential", "--client-secret",
                 CONFIDENTIAL_SECRET, "--redirect-uri", REDIRECT,
                 "--backend-client", "conformance-backend", "--backend-key", str(key),
                 "--patient-login", f"ann:{PASSWORD}", "--patient-login", f"bob:{PASSWORD}",
                 "--allow-writes", "--report", str(out), "--quiet"])
    return code, out, json.loads((out / "report.json").read_text())


def test_every_required_check_passes(green_run):
    code, _, report = green_run
    bad = [(r["id"], r["message"]) for r in report["results"]
           if r["status"] in ("fail", "error")]
    assert bad == []
    assert code == 0 and report["exit_code"] == 0
    by_group: dict[str, set[str]] = {}
    for r in report["results"]:
        by_group.setdefault(r["group"], set()).add(r["status"])
    for group in ("capability", "read", "search", "write", "http", "smart", "access",
                  "portal", "validity"):
        assert "pass" in by_group.get(group, set()), f"no check of {group} passed"
    for r in report["results"]:
        if r["status"] == "skip":
            assert r["message"], f"{r['id']} skipped without a reason"


def test_checks_really_ran(green_run):
    _, _, report = green_run
    results = {r["id"]: r for r in report["results"]}
    for check_id in ("smart.introspection", "smart.backend-token",
                     "smart.backend-assertion-rules", "portal.book-cancel", "portal.refill-request",
                     "portal.record-reading", "access.write-other-patient", "read.gone"):
        assert results[check_id]["status"] == "pass", results[check_id]["message"]
    assert results["search.paging"]["message"].startswith(
        tuple(str(n) for n in range(10, 1000)))
    assert "parameters" in results["search.params-on-data"]["message"]
    assert results["validity.r4"]["message"].endswith("resources valid")
    assert int(results["validity.r4"]["message"].split()[0]) > 100
    for r in report["results"]:
        if r["status"] == "pass" and r["group"] not in ("validity",):
            assert r["evidence"], f"{r['id']} passed with no exchange recorded"


def test_nothing_written_is_left(env, green_run):
    admin = env.smart.clients.add("conformance-admin", "symmetric",
                                  secret=CONFIDENTIAL_SECRET, redirect_uris=[REDIRECT],
                                  scope="system/*.cruds")
    token = env.smart.mint(admin, "system/*.rs")
    resp = httpx.get(f"{env.base}/Observation",
                     params={"identifier": "urn:fhir-conformance-runner:probe|",
                             "_summary": "count"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 200
    assert resp.json()["total"] == 0


def test_junit_and_json_agree(green_run):
    _, out, report = green_run
    root = ET.parse(out / "junit.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(report["results"])
    assert sum(int(s.get("failures")) for s in root.findall("testsuite")) == 0
    skipped = {c.get("name") for c in cases if c.find("skipped") is not None}
    assert skipped == {r["id"] for r in report["results"] if r["status"] == "skip"}


def test_html_report_is_self_contained_and_renders(green_run):
    _, out, report = green_run
    html = (out / "report.html").read_text()
    assert "<script" not in html and "<link" not in html and "src=" not in html
    shown = render_in_chromium(out / "report.html", ARTIFACTS / "conformance-gateway.png")
    assert shown["requests"] == []
    assert shown["verdict"] == "Every required check passed"
    assert shown["rows"] == len(report["results"])
    assert "access.read-other-patient" in shown["text"]
    assert (ARTIFACTS / "conformance-gateway.png").stat().st_size > 10_000
