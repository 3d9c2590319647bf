"""The runner against an independent FHIR implementation: Medplum's FHIR router over its
in-memory repository (tests/medplum_support.py), holding the 3 synthetic patients. The report
shows what that server passes and fails; these tests pin outcomes known from its behaviour
(see ../shared/RECIPES.md and the README's notes on Medplum)."""

from __future__ import annotations

import json

import pytest

from conformance.cli import main
from tests.conftest import SEED_TODAY


@pytest.fixture(scope="module")
def medplum_run(tmp_path_factory):
    from fhir_gateway.synthetic import generate
    from tests.medplum_support import start_medplum
    from tests.rest_support import RestStore

    base, stop = start_medplum()
    try:
        RestStore(base).load(generate(3, 7, SEED_TODAY))
        out = tmp_path_factory.mktemp("medplum-report")
        code = main(["--base", base, "--allow-writes", "--report", str(out), "--quiet"])
        report = json.loads((out / "report.json").read_text())
        yield code, {r["id"]: r for r in report["results"]}, out
    finally:
        stop()


def test_exit_1_because_required_checks_fail(medplum_run):
    code, results, _ = medplum_run
    assert code == 1
    assert any(r["status"] == "pass" for r in results.values())
    assert not [r["id"] for r in results.values() if r["status"] == "error"]


def test_what_medplum_lacks_fails(medplum_run):
    _, results, _ = medplum_run
    # The router answers /metadata as a search (a Bundle), not with a CapabilityStatement.
    assert results["capability.metadata"]["status"] == "fail"
    assert "Bundle" in results["capability.metadata"]["message"]
    assert results["capability.valid"]["status"] == "skip"
    # It stores what it is sent without validating it.
    assert results["write.invalid-rejected"]["status"] == "fail"
    assert results["write.invalid-rejected"]["evidence"][-1]["status"] == 201
    # ... and so hands back a resource that is not valid R4.
    assert results["validity.r4"]["status"] == "fail"
    assert "not-a-status" in json.dumps(results["validity.r4"]["evidence"])
    # A reference search needs the Type/id form: patient=pat-0001 finds nothing.
    assert results["search.reference-forms"]["status"] == "fail"
    assert "patient=pat-0001 found nothing" in results["search.reference-forms"]["message"]
    # Observed here (the pinned @medplum 4.5 memory repository): _include adds nothing.
    assert results["search.include"]["status"] == "fail"


def test_what_medplum_does_passes(medplum_run):
    _, results, _ = medplum_run
    for check_id in ("read.read", "read.vread", "read.history", "read.etag-version",
                     "read.not-found", "search.params-on-data", "search.paging",
                     "search.sort", "search.summary-count", "search.date-prefixes",
                     "search.token-system", "write.create", "write.update",
                     "write.conditional-create", "write.if-match", "write.delete",
                     "http.content-type", "http.errors-have-outcome"):
        assert results[check_id]["status"] == "pass", (check_id, results[check_id]["message"])
    # It forgets deleted resources: 404, not 410 (allowed, and said so).
    assert results["read.gone"]["message"].startswith("404")


def test_checks_that_cannot_apply_are_skipped_with_a_reason(medplum_run):
    _, results, out = medplum_run
    for r in results.values():
        if r["group"] in ("smart", "access", "portal"):
            assert r["status"] == "skip", r["id"]
            assert r["message"]
    html = (out / "report.html").read_text()
    assert 'id="check-capability.metadata"' in html and "row-fail" in html
