"""Every check can fail: the runner against the real gateway with one rule (or a few
independent ones) broken by a WSGI middleware in front of it (tests/conformance_support.py).
Each case asserts the matching checks fail with evidence that shows the broken rule, and
that no other check in the groups it ran failed; one test asserts every registered check
has such a case."""

from __future__ import annotations

import re

import pytest

from conformance.cli import _options, build_parser
from conformance.model import Status
from conformance.runner import RunReport, run
from tests.conformance_support import smart_args, start_breakable_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = start_breakable_gateway(tmp_path_factory.mktemp("broken"))
    yield gateway
    gateway.stop()


def run_with(gw, rule: str | tuple[str, ...] | None, groups: list[str], *extra: str,
             confidential: bool = False) -> RunReport:
    gw.breaker.rule = rule
    try:
        args = build_parser().parse_args([*smart_args(gw, confidential=confidential),
                                          "--groups", ",".join(groups), *extra])
        return run(_options(args))
    finally:
        gw.breaker.rule = None


def by_id(report: RunReport) -> dict:
    return {r.check.id: r for r in report.results}


def failed(report: RunReport) -> set[str]:
    return {r.check.id for r in report.results if r.status in (Status.FAIL, Status.ERROR)}


def evidence_text(result) -> str:
    parts = []
    for ex in result.evidence:
        parts += [ex.method, ex.url, str(ex.status), repr(ex.response_headers),
                  ex.response_body]
    return "\n".join(parts)


def test_unbroken_gateway_passes_these_groups(gw):
    report = run_with(gw, None, ["read", "search", "http", "write", "smart", "access",
                                 "portal", "validity"], "--allow-writes", confidential=True)
    assert by_id(report)["smart.introspection"].status is Status.PASS
    assert failed(report) == set(), [(r.check.id, r.message) for r in report.results
                                     if r.status in (Status.FAIL, Status.ERROR)]
    assert report.exit_code() == 0
    bare = [r.check.id for r in report.results if r.status is Status.PASS and not r.evidence
            and r.check.group != "validity"]  # validity judges the run's earlier answers
    assert bare == [], f"passed with no exchange recorded: {bare}"


# rule, groups run, the checks that must fail, a check that must still pass, what the
# evidence of the first failing check must show
CASES = [
    ("wrong-content-type", ["http", "read"], {"http.content-type", "http.accept-json",
                                              "http.format-param"},
     "read.vread", "text/html"),
    ("no-outcome", ["read", "http", "search", "validity"],
     {"read.not-found", "read.gone", "http.errors-have-outcome", "http.not-acceptable",
      "http.unsupported-media-type", "validity.errors-have-outcome"},
     "search.paging", "text/plain"),
    ("token-cacheable", ["smart"], {"smart.token-response"}, "smart.refresh-subset",
     "/auth/token"),
    ("cancel-keeps-slot", ["portal"], {"portal.book-cancel"}, "portal.record-reading",
     "busy"),
]


@pytest.mark.parametrize("rule,groups,must_fail,must_pass,shown", CASES,
                         ids=[c[0] for c in CASES])
def test_one_broken_rule_fails_its_check(gw, rule, groups, must_fail, must_pass, shown):
    report = run_with(gw, rule, groups, "--allow-writes")
    results = by_id(report)
    assert failed(report) == must_fail, [(r.check.id, r.status, r.message)
                                         for r in report.results if r.status != Status.PASS]
    for check_id in must_fail:
        assert results[check_id].status is Status.FAIL, results[check_id].message
        assert results[check_id].message
        assert results[check_id].evidence, f"{check_id} failed without evidence"
    first = results[sorted(must_fail)[0]]
    assert shown in evidence_text(first) or shown in first.message, evidence_text(first)
    assert results[must_pass].status is Status.PASS, results[must_pass].message
    # only required checks decide the exit code; a recommended one failing is reported
    required = any(results[c].check.severity.value == "required" for c in must_fail)
    assert report.exit_code() == (1 if required else 0)


# Independent rules broken together, to prove several checks in one run: the rules, the
# groups run, each check that must fail with what its evidence or message must show, and
# checks that must still pass. Every other check of those groups must not fail.
TOGETHER = [
    (("format-xml-only", "no-oauth-uris", "r5-version", "param-501", "statement-undated",
      "history-501"), ["capability"],
     {"capability.json-format": '"format":["application/fhir+xml","xml"]',
      "capability.smart-oauth-uris": "no oauth-uris extension",
      "capability.fhir-version": '"fhirVersion":"5.0.0"',
      "capability.search-params-answered": "Observation?code is declared but answered 501",
      "capability.valid": "Value for the field 'date' is required",
      "capability.interactions-answered": "history Patient/pat-0001 is declared "
                                         "but answered 501"},
     ["capability.metadata", "capability.rest-server"]),
    (("etag-mismatch", "no-cors"), ["read", "http"],
     {"read.etag-version": 'W/"999"', "http.cors-discovery": "Origin"},
     ["read.vread", "http.content-type"]),
    (("etag-missing", "invalid-resource"), ["read", "validity"],
     {"read.etag-present": "no ETag", "validity.r4": "xyz"},
     ["read.vread"]),
    (("ignore-if-match", "accepts-invalid"), ["write"],
     {"write.if-match": "PUT", "write.invalid-rejected": "not-a-status"},
     ["write.update"]),
    (("plain-pkce", "wrong-aud-accepted", "revocation-ignored", "backend-replay-accepted",
      "no-token-accepted"), ["smart"],
     {"smart.pkce-plain-refused": "code_challenge_method=plain",
      "smart.wrong-aud": "conformance.invalid",
      "smart.revoked-refused": "/auth/revoke",
      "smart.backend-assertion-rules": "replayed jti",
      "smart.no-token-401": "without a token"},
     ["smart.pkce-verifier", "smart.bad-token-401", "smart.token-response",
      "smart.backend-token"]),
    (("cross-patient-read", "include-leaks"), ["access"],
     {"access.read-other-patient": "pat-0002", "access.include-other-patient": "_revinclude"},
     ["access.search-other-patient"]),
    (("metadata-as-bundle",), ["capability"],
     {"capability.metadata": "returned a 'Bundle', not a CapabilityStatement"},
     []),
    (("rest-client-mode",), ["capability"],
     {"capability.rest-server": '"mode":"client"',
      # fhirclient reads oauth-uris from the server-mode rest entry: there is none
      "capability.smart-oauth-uris": "no oauth-uris extension"},
     ["capability.valid"]),
    (("read-drops-id", "vread-404", "history-as-searchset"), ["read"],
     {"read.read": "returned id None", "read.vread": "expected 200, got 404",
      "read.history": "type 'searchset', not history"},
     ["read.etag-version", "read.not-found"]),
    (("strict-ignored", "small-count-ignored", "token-system-ignored", "ignored-param",
      "summary-count-wrong", "sort-ignored"), ["search"],
     {"search.unknown-param-reported": "handling=strict was answered 200",
      "search.count": "_count=2 returned",
      "search.token-system": "http://example.org/other|",
      "search.params-on-data": "gender=",
      "search.summary-count": "_summary=count",
      "search.sort": "_sort=-date"},
     ["search.paging", "search.get-post"]),
    (("lenient-silent", "paging-repeats", "date-prefix-ignored",
      "post-search-ignores-count", "bare-id-reference-ignored", "include-adds-nothing"),
     ["search"],
     {"search.unknown-param-reported": "self link names it as used",
      "search.reference-forms": "found nothing, though Observation data names that patient",
      "search.include": "did not include",
      "search.paging": "_cursor",
      "search.date-prefixes": "date=gt",
      "search.get-post": "_search"},
     ["search.count", "search.params-on-data"]),
    (("create-no-location", "version-not-bumped", "if-none-exist-ignored",
      "stale-after-delete"), ["write"],
     {"write.create": "without a Location", "write.update": "kept versionId '1'",
      "write.conditional-create": "created a second resource",
      "write.delete": "expected 410 or 404, got 200"},
     ["write.if-match", "write.invalid-rejected"]),
    (("discovery-incomplete", "discovery-offers-plain", "junk-token-accepted",
      "verifier-ignored", "refresh-widens", "introspect-junk-active", "backend-token-long"),
     ["smart"],
     {"smart.discovery": "lacks grant_types_supported",
      "smart.s256-only": "offers plain",
      "smart.bad-token-401": "made-up token: expected 401, got 200",
      "smart.pkce-verifier": "exchanged with a wrong code_verifier",
      "smart.refresh-subset": "system/*.cruds",
      "smart.introspection": "made-up token is not introspected as active: false",
      "smart.backend-token": "expires_in is 3600"},
     ["smart.pkce-plain-refused", "smart.token-response", "smart.revoked-refused"]),
    (("cross-patient-data-read", "cross-patient-write", "subject-search-leaks"), ["access"],
     {"access.read-other-data": "/fhir/Observation/obs-0002-",
      "access.write-other-patient": "created an Observation for",
      "access.search-other-patient": "'subject': 'Patient/pat-000"},
     ["access.read-other-patient", "access.include-other-patient"]),
    (("op-definition-missing", "medication-history-leaks", "refill-task-unfocused",
      "unread-not-parameters", "statement-empty", "implausible-reading-accepted"), ["portal"],
     {"portal.operation-definitions": "OperationDefinition/Observation-stats",
      "portal.medication-history": "of Patient/pat-000",
      "portal.refill-request": "focus is None",
      "portal.unread": '{"unread":',
      "portal.statement": "empty page",
      "portal.record-reading": "7000 kg was recorded"},
     ["portal.book-cancel"]),
]


@pytest.mark.parametrize("rules,groups,shown,must_pass", TOGETHER,
                         ids=["+".join(c[0]) for c in TOGETHER])
def test_broken_rules_fail_only_their_checks(gw, rules, groups, shown, must_pass):
    report = run_with(gw, rules, groups, "--allow-writes", confidential="smart" in groups)
    results = by_id(report)
    assert failed(report) == set(shown), [(r.check.id, r.status, r.message)
                                          for r in report.results if r.status != Status.PASS]
    for check_id, what in shown.items():
        result = results[check_id]
        assert result.status is Status.FAIL and result.evidence, (check_id, result.message)
        assert what in result.message or what in evidence_text(result), \
            (check_id, result.message, evidence_text(result))
    for check_id in must_pass:
        assert results[check_id].status is Status.PASS, (check_id, results[check_id].message)
    assert report.exit_code() == 1  # each of these runs breaks a required check


# Checks whose failing case is in another test file, which asserts the check's status is
# "fail" (check id -> file); none now, each has a broken-server case here.
PROVEN_ELSEWHERE: dict[str, str] = {}


def test_every_check_has_a_case_that_fails_it():
    """A check nothing shows failing may be one that cannot fail: the suite goes red."""
    from pathlib import Path

    from conformance.model import all_checks

    here = set().union(*(c[2] for c in CASES), *(set(c[2]) for c in TOGETHER))
    registered = {c.id for c in all_checks()}
    unproven = registered - here - set(PROVEN_ELSEWHERE)
    assert not unproven, f"no case shows these checks failing: {sorted(unproven)}"
    stale = (here | set(PROVEN_ELSEWHERE)) - registered
    assert not stale, f"no such checks: {sorted(stale)}"
    for check_id, name in PROVEN_ELSEWHERE.items():
        text = (Path(__file__).parent / name).read_text()
        assert f'results["{check_id}"]["status"] == "fail"' in text, (check_id, name)


def test_without_a_token_data_checks_skip_and_say_why(gw):
    report = run(_options(build_parser().parse_args([
        "--base", gw.base, "--groups", "capability,read,search,http,access"])))
    results = by_id(report)
    assert failed(report) == set()
    for check_id in ("read.read", "search.paging", "http.content-type",
                     "capability.interactions-answered", "access.read-other-patient"):
        assert results[check_id].status is Status.SKIP
    assert "--token or --smart-client" in results["read.read"].message
    assert results["capability.metadata"].status is Status.PASS


def test_tokens_never_appear_in_evidence(gw):
    report = run_with(gw, None, ["smart"])
    tokens = [s for r in report.results for ex in r.evidence
              for s in (ex.request_headers.get("authorization", ""),)]
    assert any(t.startswith("Bearer ") for t in tokens)
    assert all(t.endswith("***") for t in tokens if t), tokens
    for r in report.results:
        for ex in r.evidence:
            assert "correct horse" not in ex.request_body
            for match in re.finditer(r'"(access|refresh|id)_token": ?"([^"]*)"',
                                     ex.response_body):
                assert match.group(2).endswith("***"), match.group(0)


def test_failure_evidence_shows_in_the_html_report(gw, tmp_path):
    from conformance.report.html import write_html
    from tests.conformance_support import ARTIFACTS, render_in_chromium

    report = run_with(gw, "no-outcome", ["read"])
    write_html(report, tmp_path / "report.html")
    shown = render_in_chromium(tmp_path / "report.html", ARTIFACTS / "conformance-broken.png")
    assert shown["verdict"] == "Required checks failed"
    assert shown["open_evidence"] >= 1
    assert "the error body is text/plain, not an OperationOutcome" in shown["text"]
    assert "404 NOT FOUND" in shown["text"]
    assert shown["requests"] == []


def test_access_group_with_two_given_tokens(gw):
    """--token/--token2 with --patient/--patient2 instead of a launch (tokens minted by the
    gateway's own admin path for ann's and bob's records)."""
    client = gw.smart.clients.get("app-public")
    ann = gw.smart.mint(client, "patient/*.rs", patient="pat-0001")
    bob = gw.smart.mint(client, "patient/*.rs", patient="pat-0002")
    argv = ["--base", gw.base, "--token", ann, "--token2", bob, "--patient", "pat-0001",
            "--patient2", "pat-0002", "--groups", "access"]
    report = run(_options(build_parser().parse_args(argv)))
    assert failed(report) == set()
    assert by_id(report)["access.read-other-patient"].status is Status.PASS
    gw.breaker.rule = "cross-patient-read"
    try:
        report = run(_options(build_parser().parse_args(argv)))
    finally:
        gw.breaker.rule = None
    assert failed(report) == {"access.read-other-patient"}


@pytest.mark.parametrize("change,shown", [
    ({"--patient-login": "ann:wrong-password"}, "ended on a 401 page"),
    ({"--smart-client": "no-such-app"}, "without a redirect to --redirect-uri"),
    ({"--redirect-uri": "http://127.0.0.1:9/elsewhere"}, "without a redirect"),
])
def test_a_launch_that_cannot_complete_is_exit_2(gw, capsys, change, shown):
    from conformance.cli import main

    argv = smart_args(gw)
    for opt, value in change.items():
        i = argv.index(opt)
        argv[i + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("conformance: cannot run: SMART launch failed: ")
    assert shown in err and "\n" not in err and "Traceback" not in err


def test_progress_lines_and_summary_table(gw, capsys):
    from conformance.cli import main

    assert main([*smart_args(gw), "--groups", "read"]) == 0  # read.gone skips: no writes
    captured = capsys.readouterr()
    progress = [ln for ln in captured.err.splitlines() if ln.startswith("[")]
    assert progress[0].startswith("[  1/7] PASS read.read")
    assert len(progress) == 7
    table = captured.out.splitlines()
    assert table[1].split() == ["group", "pass", "fail", "skip", "error"]
    assert table[3].split() == ["read", "6", "0", "1", "0"]
