"""The portal's parts without a browser: catalogue, headers, CSRF, sessions, record rules,
and the rule that the portal imports nothing from the server side."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from portal import PortalSettings, create_portal, records
from portal.messages import CATALOGUES, EN, translate
from portal.sessions import SessionStore

PORTAL = Path(__file__).resolve().parent.parent / "portal"
SERVER_PACKAGES = {"fhir_gateway", "smart_launch", "adapters", "mappings", "conformance"}


def settings(**kw) -> PortalSettings:
    base = dict(fhir_base="http://127.0.0.1:9/fhir", client_id="demo-portal",
                redirect_uri="http://127.0.0.1:8081/callback", secret_key="test-secret")
    return PortalSettings(**{**base, **kw})


def test_portal_imports_nothing_from_the_server_side():
    for path in PORTAL.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in SERVER_PACKAGES, f"{path}: imports {name}"


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


@pytest.mark.parametrize("lang", sorted(CATALOGUES))
def test_every_language_has_every_string_with_the_same_placeholders(lang):
    cat = CATALOGUES[lang]
    assert set(cat) == set(EN)
    for key, text in EN.items():
        assert _fields(cat[key]) == _fields(text), key


def test_templates_use_only_catalogue_keys():
    keys = set()
    for path in (PORTAL / "templates").glob("*.html"):
        keys |= set(re.findall(r'\bt\(\s*["\']([a-z_.]+[a-z_])["\']', path.read_text()))
    assert keys and keys <= set(EN), keys - set(EN)
    assert translate("es", "nav.home") == "Inicio"
    assert translate("xx", "nav.home") == "Home"


def test_pages_carry_a_strict_csp_and_security_headers():
    client = create_portal(settings()).test_client()
    resp = client.get("/signin")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src" not in csp  # falls back to 'none': no script at all
    assert "form-action 'self' http://127.0.0.1:9" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("portal_session=") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and "Secure" not in cookie
    html = resp.text
    assert "<main" in html and 'href="#main"' in html and "<header" in html
    assert "<style" not in html and "<script" not in html and "style=" not in html


def test_cookies_are_secure_behind_tls():
    client = create_portal(settings(redirect_uri="https://portal.example/callback")).test_client()
    resp = client.get("/signin", base_url="https://portal.example")
    assert "Secure" in resp.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in resp.headers


def test_post_without_csrf_token_is_refused():
    client = create_portal(settings()).test_client()
    client.get("/signin")
    resp = client.post("/preferences", data={"large": "on"})
    assert resp.status_code == 400
    assert "open too long" in resp.text


def test_pages_need_a_sign_in():
    client = create_portal(settings()).test_client()
    for path in ("/home", "/record", "/prescriptions"):
        resp = client.get(path)
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/signin")


def test_language_and_large_text_preferences():
    client = create_portal(settings()).test_client()
    page = client.get("/signin").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert 'name="back" value="/signin"' in page  # the form says which page it was on
    resp = client.post("/preferences", data={"csrf_token": token, "lang": "es",
                                             "back": "/signin"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/signin"
    resp = client.post("/preferences", data={"csrf_token": token, "large": "on",
                                             "back": "https://evil.example/"})
    assert resp.headers["Location"] == "/"  # never an outside URL
    page = client.get("/signin").text
    assert '<html lang="es" class="large-text">' in page and "Iniciar sesión" in page


@pytest.mark.parametrize("back, to", [
    ("/trackers/weight", "/trackers/weight"),  # a page with an id in its path
    ("/privacy", "/privacy"),
    ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"),
    ("evil.example", "/"), ("", "/"), ("/callback", "/"),  # acts on arrival: not again
    ("/launch", "/"), ("/signout", "/"),  # POST only
    ("/no-such-page", "/"), ("/static/portal.css", "/"),
])
def test_a_preference_change_goes_back_only_to_a_page_of_the_portal(back, to):
    client = create_portal(settings()).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signin").text).group(1)
    resp = client.post("/preferences", data={"csrf_token": token, "large": "on", "back": back})
    assert resp.status_code == 302 and resp.headers["Location"] == to


def test_sessions_expire_after_idle_and_absolute_time():
    now = [0.0]
    store = SessionStore(idle=10, absolute=30, clock=lambda: now[0])
    sid, _ = store.create()
    for step in (9, 18, 27):
        now[0] = step
        assert store.get(sid)[0] is not None
    now[0] = 31
    live, expired = store.get(sid)
    assert live is None and expired is not None
    sid, _ = store.create()
    now[0] = 42
    live, expired = store.get(sid)  # idle for 11 s
    assert live is None and expired is not None
    assert store.get(sid) == (None, None)  # and gone


def test_out_of_range_in_words_from_interpretation_or_range():
    def obs(value, interp=None):
        out = {"resourceType": "Observation", "code": {"text": "Potassium"},
               "valueQuantity": {"value": value, "unit": "mmol/L"},
               "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"},
                                   "high": {"value": 5.1, "unit": "mmol/L"}}]}
        if interp:
            out["interpretation"] = [{"coding": [{"code": interp}]}]
        return out

    assert records.result_flag(obs(6.0)) == "high"
    assert records.result_flag(obs(3.0)) == "low"
    assert records.result_flag(obs(4.0)) == "normal"
    assert records.result_flag(obs(4.0, "H")) == "high"
    assert records.result_flag(obs(4.0, "A")) == "abnormal"
    assert records.range_text(obs(4.0)) == "3.5 - 5.1 mmol/L"
    assert records.result_flag({"valueQuantity": {"value": 1}}) == ""


def test_account_balance_from_the_r5_extension():
    account = {"extension": [{"url": records.BALANCE_EXTENSION, "extension": [
        {"url": "aggregate", "valueCodeableConcept": {}},
        {"url": "amount", "valueMoney": {"value": 42.5, "currency": "USD"}}]}]}
    assert str(records.account_balance(account)) == "42.5"
    assert records.account_balance({}) is None


def test_portal_runs_as_its_own_process():
    """`fhir-gateway demo` starts `python -m portal` as a separate process."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "portal", "--help"], capture_output=True,
                         text=True, timeout=60, check=True)
    assert "--fhir-base" in out.stdout


def test_the_servers_request_log_leaves_out_query_strings():
    """`python -m portal` logs each request's path only: the callback's query carries the
    authorization code."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "portal", "--fhir-base",
                             "http://127.0.0.1:9/fhir", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/callback?code=SECRET-CODE&state=S1", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("python -m portal did not answer")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert '"GET /callback" ' in err, err
    assert "SECRET-CODE" not in err and "S1" not in err


def test_trend_chart_is_plain_svg_with_every_point():
    from decimal import Decimal

    from portal.charts import trend_svg

    svg = str(trend_svg([("2026-01-01", Decimal("4.0")), ("2026-02-01", Decimal("6.0"))],
                        "Potassium <b>", "mmol/L", Decimal("3.5"), Decimal("5.1")))
    assert svg.count("<circle") == 2 and 'role="img"' in svg
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    assert "style=" not in svg and "<script" not in svg  # nothing the CSP would block
    assert 'fill="#a4000f"' in svg  # the 6.0 is drawn as out of range


def test_chart_points_sit_at_their_dates():
    from portal.charts import PAD_X, WIDTH, x_positions

    right = WIDTH - PAD_X
    xs = x_positions(["2026-01-01", "2026-01-02", "2026-01-11"])  # 1 day, then 9 days
    assert xs[0] == PAD_X and xs[2] == right
    assert abs((xs[1] - xs[0]) * 9 - (xs[2] - xs[1])) < 1e-6
    times = x_positions(["2026-01-01T08:00:00+00:00", "2026-01-01T10:00:00+02:00",
                         "2026-01-01T12:00"])  # the first two are the same moment
    assert times[0] == times[1] == PAD_X and times[2] == right
    assert x_positions(["a", "b", "c"]) == [PAD_X, (PAD_X + right) / 2, right]  # not dates
    assert x_positions(["2026-01-01", "2026-01-01"]) == [PAD_X, right]  # no time between
    assert x_positions(["2026-01-01"]) == [WIDTH / 2]


def test_session_store_keeps_at_most_its_limit():
    now = [0.0]
    store = SessionStore(idle=100, absolute=100, clock=lambda: now[0], limit=3)
    sids = []
    for step in range(5):
        now[0] = step
        sids.append(store.create()[0])
    assert [store.get(s)[0] is not None for s in sids] == [False, False, True, True, True]


def test_refills_left_counts_completed_requests():
    order = {"dispenseRequest": {"numberOfRepeatsAllowed": 2}}
    done, open_ = {"status": "completed"}, {"status": "requested"}
    assert records.refills_left(order, []) == 2
    assert records.refills_left(order, [done, open_]) == 1
    assert records.refills_left(order, [done, done, done]) == 0
    assert records.open_task([done, open_]) is open_


def test_every_fhir_status_the_pages_show_has_words():
    shown = {  # MedicationRequest.status, Condition/AllergyIntolerance.clinicalStatus
        "active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
        "unknown", "recurrence", "relapse", "inactive", "remission", "resolved"}
    assert {f"status.{c}" for c in shown} <= set(EN)
    tasks = {"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
             "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
    assert {f"rx.task_status.{c}" for c in tasks} <= set(EN)


def test_moments_are_shown_in_the_portals_time_zone():
    import datetime as dt

    sent = "2026-06-03T14:42:00+00:00"
    local = dt.datetime(2026, 6, 3, 14, 42, tzinfo=dt.UTC).astimezone()
    assert records.local_time(sent) == local.strftime("%Y-%m-%d %H:%M")
    assert records.local_time("2026-06-03T09:42:00-05:00") == records.local_time(sent)
    assert records.local_time("2026-06-03T14:42:00") == "2026-06-03 14:42"  # no offset
    assert records.local_time("2026-06") == "2026-06" and records.local_time(None) == ""


def test_the_busy_form_only_for_changes_the_gateway_held_back():
    """`busy_page` gives the form back only for a 503 the gateway marks `held-back` (nothing
    was sent, so trying again cannot double it); any other 503 may have reached the EHR and
    gets the error page, as does a held-back one whose form cannot be read either."""
    import pytest

    from portal.blueprint import busy_page
    from portal.fhir_api import GatewayError

    held = GatewayError(503, "waits", codes=frozenset({"held-back"}))
    assert busy_page(lambda: "the form", held) == "the form"
    maybe_sent = GatewayError(503, "The EHR timed out")
    with pytest.raises(GatewayError) as raised:
        busy_page(lambda: "the form", maybe_sent)
    assert raised.value is maybe_sent

    def unreadable():
        raise GatewayError(503, "down")

    with pytest.raises(GatewayError) as raised:
        busy_page(unreadable, held)
    assert raised.value is held
