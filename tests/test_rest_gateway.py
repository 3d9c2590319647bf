"""The REST adapter end to end, over real HTTP: the capability matrix deciding what the gateway
offers (405 and 501 naming what the EHR lacks, operations left out of the CapabilityStatement),
the refill fallback, SMART Backend Services to the EHR, the cache never bypassing access
checks, and the `capabilities` / `outbox` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from adapters.embedded import EmbeddedAdapter
from tests.conftest import start_live_gateway
from tests.rest_support import seeded_upstream, start_rest_gateway
from tests.smart_support import smart_env_for


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    up = seeded_upstream(tmp_path_factory.mktemp("upstream"))
    yield up
    up.stop()


def front(tmp_path, upstream, auth=False, **settings):
    env = {f"FHIR_GATEWAY_FHIR_REST_{k.upper()}": v for k, v in settings.items()}
    return start_rest_gateway(tmp_path, upstream.base, env, auth=auth,
                              store=EmbeddedAdapter(upstream.database_url),
                              vendor=settings.get("vendor", "fhir-gateway"))


def test_epic_profile_refuses_what_epic_does_not_offer(tmp_path, upstream):
    live, stop = front(tmp_path, upstream, vendor="epic")
    try:
        mark = live.fingerprint()
        resp = live.post("Appointment", {"resourceType": "Appointment", "status": "proposed",
                                         "participant": [{"status": "needs-action"}]})
        assert resp.status_code == 405, resp.text
        assert "create is not allowed on Appointment" in resp.json()["issue"][0]["diagnostics"]
        resp = live.post("Appointment/$book", {"resourceType": "Parameters", "parameter": [
            {"name": "slot", "valueString": "x"}, {"name": "patient", "valueString": "pat-0001"}]})
        assert resp.status_code == 501, resp.text
        text = resp.json()["issue"][0]["diagnostics"]
        assert "$book" in text and "Appointment create" in text
        resp = live.post("Invoice/inv-0001-01/$pay", {"resourceType": "Parameters"})
        assert resp.status_code == 501 and "Invoice read" in resp.text
        statement = live.get("metadata").json()
        by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
        assert "Invoice" not in by_type
        assert {i["code"] for i in by_type["Appointment"]["interaction"]} <= {
            "read", "vread", "search-type", "history-instance"}
        assert "book" not in {o["name"] for o in by_type["Appointment"].get("operation", [])}
        assert "everything" in {o["name"] for o in by_type["Patient"]["operation"]}
        assert {"update"} <= {i["code"] for i in by_type["Task"]["interaction"]}
        assert live.fingerprint() == mark  # nothing reached the EHR
    finally:
        stop()


def test_refill_falls_back_to_a_message_when_tasks_are_not_writable(tmp_path, upstream):
    live, stop = front(tmp_path, upstream, deny="Task.create")
    store = live.adapter
    try:
        resp = live.post("MedicationRequest/mr-0002-02/$refill-request",
                         {"resourceType": "Parameters", "parameter": [
                             {"name": "note", "valueString": "Two left"}]})
        assert resp.status_code == 201, resp.text
        message = resp.json()
        assert message["resourceType"] == "Communication"
        assert message["about"][0]["reference"] == "MedicationRequest/mr-0002-02"
        assert "Two left" in message["payload"][0]["contentString"]
        stored = store.read("Communication", message["id"])
        assert stored["recipient"] == store.read("MedicationRequest", "mr-0002-02")["requester"] \
            or stored["recipient"][0]["reference"].startswith("Practitioner/")
        assert not [r for r in store.iter_all() if r["resourceType"] == "Task"
                    and r.get("focus", {}).get("reference") == "MedicationRequest/mr-0002-02"
                    and r.get("status") == "requested"]
    finally:
        stop()
    live, stop = front(tmp_path / "none", upstream, deny="Task.create,Communication.create")
    try:
        mark = live.fingerprint()
        resp = live.post("MedicationRequest/mr-0002-02/$refill-request",
                         {"resourceType": "Parameters"})
        assert resp.status_code == 501
        assert "Task create" in resp.json()["issue"][0]["diagnostics"]
        assert live.fingerprint() == mark
    finally:
        stop()


def test_capabilities_and_outbox_commands(tmp_path, upstream):
    env = {"FHIR_GATEWAY_DATA": str(tmp_path), "FHIR_GATEWAY_ADAPTER": "fhir_rest",
           "FHIR_GATEWAY_FHIR_REST_BASE_URL": upstream.base,
           "FHIR_GATEWAY_FHIR_REST_VENDOR": "oracle", "FHIR_GATEWAY_FHIR_REST_NAME": "clinic-a",
           "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "fhir_gateway", "capabilities", "--ehr",
                          "clinic-a"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "vendor profile: oracle" in out and "CapabilityStatement: served" in out
    task_row = next(line for line in out.splitlines() if line.startswith("Task "))
    assert "no (profile oracle)" in task_row
    book = next(line for line in out.splitlines() if "Appointment/$book" in line)
    assert "direct" in book
    refill = next(line for line in out.splitlines() if "$refill-request" in line)
    assert "fallback" in refill
    pay = next(line for line in out.splitlines() if "Invoice/$pay" in line)
    assert "unavailable (501)" in pay
    run = subprocess.run([sys.executable, "-m", "fhir_gateway", "capabilities", "--ehr",
                          "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no EHR called 'nope'" in run.stderr

    from fhir_gateway.outbox import Outbox
    from smart_launch.db import make_state_engine

    outbox = Outbox(make_state_engine(f"sqlite:///{tmp_path / 'gateway.sqlite3'}"))
    entry = outbox.enqueue(method="POST", resource_type="Observation", resource_id=None,
                           body={"resourceType": "Observation"}, if_match=None, write_id="w",
                           lane="pat-0001", client_id="", error="EHR down", retry_after=60)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fhir_gateway", "outbox", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    listing = cli("list")
    assert listing.returncode == 0 and entry.id in listing.stdout and "queued" in listing.stdout
    assert "EHR down" in listing.stdout and "Observation\"" not in listing.stdout
    assert cli("drop", entry.id).returncode == 0
    assert outbox.get(entry.id).status == "dropped"
    again = cli("drop", entry.id)
    assert again.returncode == 1 and "it is dropped" in again.stderr
    assert cli("retry").returncode == 2
    kept = cli("purge")  # the dropped entry is new: [outbox] keep_days (30) keeps it
    assert kept.returncode == 0 and "purged 0 " in kept.stdout, kept.stdout + kept.stderr
    assert outbox.get(entry.id) is not None
    purged = cli("purge", "--older-than-days", "0")
    assert purged.returncode == 0 and "purged 1 " in purged.stdout, purged.stdout
    assert outbox.get(entry.id) is None
    negative = cli("purge", "--older-than-days", "-1")
    assert negative.returncode == 2 and "must be 0 or more" in negative.stderr
    env["FHIR_GATEWAY_OUTBOX_KEEP_DAYS"] = "0"  # keeps every entry: the command purges none
    settled = outbox.enqueue(method="DELETE", resource_type="Basic", resource_id="b",
                             body=None, if_match=None, write_id=None, lane="", client_id="",
                             error="EHR down", retry_after=60)
    assert outbox.drop(settled.id)
    kept = cli("purge")
    assert kept.returncode == 0 and "nothing purged" in kept.stdout, kept.stdout + kept.stderr
    assert outbox.get(settled.id) is not None


@pytest.fixture
def smart_upstream(tmp_path):
    """An upstream gateway with SMART on and a backend-services client `gateway-a` whose
    public key it knows; the private key is written to a file for the front."""
    from fhir_gateway.synthetic import generate
    from tests.conftest import SEED_TODAY

    live, stop = start_live_gateway(tmp_path / "up", f"sqlite:///{tmp_path / 'ehr.sqlite3'}",
                                    auth=True)
    live.adapter.load(generate(2, 7, SEED_TODAY))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "gateway-a.pem").write_bytes(pem)
    public = RSAKey.import_key(pem).as_dict(private=False)
    public.update({"kid": "k1", "alg": "RS384", "use": "sig"})
    live.app.extensions["smart"].clients.add("gateway-a", "asymmetric",
                                              jwks={"keys": [public]}, scope="system/*.rs")
    yield live, tmp_path / "gateway-a.pem"
    stop()


def test_backend_services_to_the_ehr(tmp_path, smart_upstream):
    up, pem = smart_upstream
    settings = {"FHIR_GATEWAY_FHIR_REST_AUTH": "backend-services",
                "FHIR_GATEWAY_FHIR_REST_CLIENT_ID": "gateway-a",
                "FHIR_GATEWAY_FHIR_REST_PRIVATE_KEY_FILE": str(pem),
                "FHIR_GATEWAY_FHIR_REST_KEY_ID": "k1",
                "FHIR_GATEWAY_FHIR_REST_SCOPE": "system/*.rs"}
    live, stop = start_rest_gateway(tmp_path / "front", up.base, settings, auth=False)
    try:
        resp = live.get("Patient/pat-0001")
        assert resp.status_code == 200, resp.text
        assert live.get("Observation", params={"patient": "pat-0001"}).json()["total"] > 0
        # the EHR saw the gateway's own client, never an app's token
        rows = up.app.extensions["fhir_gateway"].audit.search(count=200)
        assert {r["client_id"] for r in rows if r["action"] in ("read", "search-type")} \
            == {"gateway-a"}
    finally:
        stop()
    bad = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "bad.pem").write_bytes(bad.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    live, stop = start_rest_gateway(tmp_path / "front2", up.base, {
        **settings, "FHIR_GATEWAY_FHIR_REST_PRIVATE_KEY_FILE": str(tmp_path / "bad.pem")},
        auth=False)
    try:
        resp = live.get("Patient/pat-0001")
        assert resp.status_code == 502, resp.text
        text = resp.json()["issue"][0]["diagnostics"]
        assert "refused the gateway's backend-services credentials" in text
        assert "127.0.0.1" not in text
    finally:
        stop()


def test_cached_reads_are_still_checked_for_each_token(tmp_path, upstream):
    """A resource one patient read (and the gateway cached) stays hidden from another."""
    live, stop = front(tmp_path, upstream, auth=True, default_cache_ttl="300")
    env = smart_env_for(live)
    try:
        ann = env.patient_token("app-public", "ann")["access_token"]
        bob = env.patient_token("app-public", "bob")["access_token"]
        with env.fhir(ann) as client:
            first = client.get("Patient/pat-0001")
            again = client.get("Patient/pat-0001")
            obs = client.get("Observation", params={"patient": "pat-0001", "_count": "1"})
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        oid = obs.json()["entry"][0]["resource"]["id"]
        with env.fhir(ann) as client:
            assert client.get(f"Observation/{oid}").status_code == 200  # now cached
        with env.fhir(bob) as client:
            assert client.get("Patient/pat-0001").status_code == 404
            assert client.get(f"Observation/{oid}").status_code == 404
            found = client.get("Observation", params={"patient": "pat-0001"})
            assert found.status_code in (200, 403)
            if found.status_code == 200:
                assert not found.json().get("entry")
        assert json.dumps(first.json()).count("pat-0001") >= 1
    finally:
        env.browser.close()
        stop()


def test_cached_search_pages_still_drop_what_names_another_patient(tmp_path, upstream):
    """A cached page keeps the Patients each resource names, so a hit skips walking them
    again; a resource that names another patient stays hidden on the hit as on the miss."""
    live, stop = front(tmp_path, upstream, auth=True, default_cache_ttl="300")
    env = smart_env_for(live)
    store = EmbeddedAdapter(upstream.database_url)
    code = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
            "text": "cache-check"}

    def observation(**extra) -> str:
        body = {"resourceType": "Observation", "status": "final", "code": code,
                "subject": {"reference": "Patient/pat-0001"}, **extra}
        return store.create(body).resource["id"]

    try:
        own = observation(performer=[{"reference": "Practitioner/prac-01"}])
        mixed = observation(performer=[{"reference": "Patient/pat-0002"}])
        ann = env.patient_token("app-public", "ann")["access_token"]
        params = {"patient": "pat-0001", "code": "http://loinc.org|8867-4", "_count": "50"}
        with env.fhir(ann) as client:
            miss = client.get("Observation", params=params)
            store.delete("Observation", own)  # behind the gateway's back: the cache serves
            hit = client.get("Observation", params=params)
        for page in (miss, hit):
            assert page.status_code == 200, page.text
            ids = {e["resource"]["id"] for e in page.json().get("entry", [])
                   if e.get("search", {}).get("mode") == "match"}
            assert own in ids  # the hit still shows it: it came from the cache
            assert mixed not in ids
        # The access log names whose data both answers were, from the Patients the page kept
        # (an included Practitioner names none and does not change it).
        with env.fhir(ann) as client:
            with_author = client.get("Observation", params={**params, "_include":
                                                            "Observation:performer"})
        assert with_author.status_code == 200, with_author.text
        assert "Practitioner/prac-01" in {
            f'{e["resource"]["resourceType"]}/{e["resource"]["id"]}'
            for e in with_author.json()["entry"] if e["search"]["mode"] == "include"}
        audit = live.app.extensions["fhir_gateway"].audit
        searches = [r for r in audit.search(count=50) if r["action"] == "search-type"]
        assert len(searches) == 3
        assert {r["patient"] for r in searches} == {"pat-0001"}
    finally:
        store.close()
        env.browser.close()
        stop()


def test_access_log_names_the_patient_a_cached_page_belongs_to(tmp_path, upstream):
    """A clinic-wide (system) token has no patient of its own: the access log's patient is
    the one the page's resources belong to, read from the Patients the cached page keeps
    (an included Practitioner belongs to nobody); a page of several patients names none."""
    live, stop = front(tmp_path, upstream, auth=True, default_cache_ttl="300")
    smart = live.app.extensions["smart"]
    smart.clients.add("clinic-job", "public", redirect_uris=["http://127.0.0.1:9/cb"])
    token = smart.mint(smart.clients.get("clinic-job"), "system/*.rs")
    audit = live.app.extensions["fhir_gateway"].audit
    try:
        with httpx.Client(base_url=live.base + "/", timeout=30, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}) as c:
            pages = []
            for params in ({"patient": "pat-0002", "_include": "Encounter:participant"},
                           {"_count": "50"}):
                for _ in range(2):  # a miss, then a hit
                    pages.append(c.get("Encounter", params=params))
                    assert pages[-1].status_code == 200, pages[-1].text
        kinds = {e["resource"]["resourceType"] for e in pages[1].json()["entry"]}
        assert kinds == {"Encounter", "Practitioner"}
        subjects = {e["resource"]["subject"]["reference"] for e in pages[3].json()["entry"]}
        assert len(subjects) > 1
        rows = [r for r in audit.search(count=50) if r["action"] == "search-type"]
        assert [r["patient"] for r in reversed(rows)] == ["pat-0002", "pat-0002", None, None]
    finally:
        stop()


def _pay(live, invoice: str, amount: float, key: str):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "amount", "valueMoney": {"value": amount, "currency": "USD"}},
        {"name": "card-number", "valueString": "4111 1111 1111 1111"},
        {"name": "card-expiry", "valueString": "11/38"},
        {"name": "card-holder", "valueString": "Bob"}]}
    return live.post(f"Invoice/{invoice}/$pay", body, headers={
        "Content-Type": "application/fhir+json", "Idempotency-Key": key})


def test_payments_go_to_the_ledger_where_the_ehr_takes_none(tmp_path, upstream):
    """acct-0002 holds 105.50; inv-0002-01 owes 75.50 (the seed). The EHR here serves
    Invoices and Accounts but takes no payment resources."""
    from concurrent.futures import ThreadPoolExecutor
    from decimal import Decimal

    from mappings.portal import billing

    live, stop = front(tmp_path, upstream,
                       deny="PaymentReconciliation.create,PaymentNotice.create,Account.update")
    try:
        mark = live.fingerprint()
        first = _pay(live, "inv-0002-01", 20, "key-1")
        assert first.status_code == 201, first.text
        receipt = first.json()
        assert receipt["resourceType"] == "PaymentReconciliation"
        assert receipt["paymentAmount"] == {"value": 20.0, "currency": "USD"}
        again = _pay(live, "inv-0002-01", 20, "key-1")
        assert again.status_code == 200 and again.json()["id"] == receipt["id"]
        assert "4111" not in first.text and "11/38" not in first.text
        too_much = _pay(live, "inv-0002-01", 60, "key-2")  # 55.50 left on the invoice
        assert too_much.status_code == 422
        assert too_much.json()["issue"][0]["expression"] == ["amount"]
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda i: _pay(live, "inv-0002-01", 20, f"race-{i}"),
                                range(6)))
        paid = [r for r in got if r.status_code == 201]
        assert all(r.status_code in (201, 409, 422) for r in got), [r.text for r in got]
        assert 1 <= len(paid) <= 2  # 55.50 left: at most two more payments of 20
        assert live.fingerprint() == mark  # nothing was written to the EHR
        statement = live.get("Account/acct-0002/$statement", headers={"Accept": "text/html"})
        assert statement.status_code == 200
        start = billing.account_balance(live.adapter.read("Account", "acct-0002"))
        left = start - 20 * (1 + len(paid))
        assert f"Balance due: ${left:,.2f}" in statement.text
        assert statement.text.count("Card ending 1111") == 1 + len(paid)
        assert left < start and Decimal(str(start)) == Decimal("105.50")
    finally:
        stop()


def test_two_gateways_share_the_redis_cache(tmp_path):
    """With REDIS_URL both processes read one cache: what one cached the other serves, and a
    write through one invalidates the other's searches."""
    import uuid

    import redis

    from tests.conftest import skip_or_fail

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        skip_or_fail("GATEWAY_REQUIRE_REDIS", "Redis is not running on 127.0.0.1:6379")
    up = seeded_upstream(tmp_path / f"up-{uuid.uuid4().hex[:6]}", patients=1)
    env = {"REDIS_URL": url, "FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL": "300",
           "FHIR_GATEWAY_FHIR_REST_RETRIES": "0",
           "FHIR_GATEWAY_FHIR_REST_NAME": f"ehr-{uuid.uuid4().hex[:8]}"}  # its own keys
    one, stop_one = start_rest_gateway(tmp_path / "one", up.base, env)
    two, stop_two = start_rest_gateway(tmp_path / "two", up.base, env)
    try:
        found = one.get("Observation", params={"patient": "pat-0001", "_count": "5"}).json()
        assert found["total"] > 0
        assert one.get("Patient/pat-0001").status_code == 200
        created = two.post("Observation", {
            "resourceType": "Observation", "status": "final", "code": {"text": "shared"},
            "subject": {"reference": "Patient/pat-0001"}})
        assert created.status_code == 201
        after = one.get("Observation", params={"patient": "pat-0001", "_count": "5"}).json()
        assert after["total"] == found["total"] + 1  # two's write reached one's cache keys
        up.kill()
        cached = two.get("Patient/pat-0001")  # one cached it; two serves it, EHR down
        assert cached.status_code == 200 and cached.json()["id"] == "pat-0001"
        assert two.get("Practitioner/prac-01").status_code == 503  # never cached: 503
    finally:
        stop_one()
        stop_two()
        up.stop()



def test_clinics_with_their_own_credentials_never_share_redis_entries():
    """Two clinics at one EHR base (two Medplum projects) may be shown different data: with
    their own credentials their cache entries are apart; a second gateway of the same clinic
    shares them. The secrets never appear in the keys."""
    import uuid

    import redis

    from adapters.fhir_rest import FhirRestAdapter, RestSettings
    from tests.conftest import skip_or_fail

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        skip_or_fail("GATEWAY_REQUIRE_REDIS", "Redis is not running on 127.0.0.1:6379")
    base = f"http://ehr-{uuid.uuid4().hex[:8]}.test/fhir"

    def clinic(token: str) -> FhirRestAdapter:
        return FhirRestAdapter(RestSettings(base_url=base, auth="bearer", bearer_token=token,
                                            redis_url=url, retries=0))

    first, other, again = clinic("secret-one"), clinic("secret-two"), clinic("secret-one")
    try:
        assert first.cache.put("r:Patient/p1", b'{"resourceType":"Patient","id":"p1"}', None)
        assert again.cache.get("r:Patient/p1").raw.startswith(b'{"resourceType":"Patient"')
        assert other.cache.get("r:Patient/p1") is None
        first.cache.bump("Patient")
        assert again.cache.generation("Patient") == 1 and other.cache.generation("Patient") == 0
        # a read sent before that write is not stored; one sent after it is
        assert again.cache.put_unless_written("r:Patient/p2", b"{}", None, "Patient", 0) is None
        assert again.cache.put_unless_written("r:Patient/p2", b"{}", None, "Patient", 1)
        assert first.cache.get("r:Patient/p2").raw == b"{}"
        assert "secret-one" not in first.s.cache_namespace()  # only its digest
    finally:
        for one in (first, other, again):
            one.close()


def test_queued_writes_are_seen_only_by_their_own_patient(tmp_path):
    """With the EHR down a patient's write is queued (202); the status Task and the outbox
    listing show it to that patient only, and it is stored once the EHR is back."""
    up = seeded_upstream(tmp_path / "up", patients=2)
    live, stop = start_rest_gateway(tmp_path / "front", up.base, {
        "FHIR_GATEWAY_FHIR_REST_RETRIES": "0", "FHIR_GATEWAY_FHIR_REST_BREAKER_RESET": "0.5"},
        auth=True, store=EmbeddedAdapter(up.database_url))
    env = smart_env_for(live)
    try:
        ann = env.patient_token("app-public", "ann", scope="launch/patient openid fhirUser "
                                "patient/*.cruds")["access_token"]
        bob = env.patient_token("app-public", "bob")["access_token"]
        up.kill()
        with env.fhir(ann) as client:
            queued = client.post("Observation", json={
                "resourceType": "Observation", "status": "final",
                "code": {"text": "home reading"},
                "subject": {"reference": "Patient/pat-0001"}},
                headers={"Content-Type": "application/fhir+json"})
            assert queued.status_code == 202, queued.text
            status_url = queued.headers["Content-Location"]
            assert f"127.0.0.1:{up.port}" not in queued.text
            mine = client.get(status_url)
            assert mine.status_code == 200 and mine.json()["status"] == "requested"
            assert mine.json()["for"] == {"reference": "Patient/pat-0001"}
            assert mine.json()["requester"] == {"reference": "Patient/pat-0001"}
            # what a clinician's app, or another user of the same app (a proxy), queued about
            # pat-0001 is theirs: not listed for her, and its status URL is not hers
            outbox = live.app.extensions["fhir_gateway"].service.outbox
            theirs = [outbox.enqueue(
                method="POST", resource_type="Observation", resource_id=None,
                body={"resourceType": "Observation"}, if_match=None, write_id=None,
                lane="pat-0001", client_id=app, error="test", retry_after=3600,
                requester=user) for app, user in (("clinic-app", "Practitioner/prac-01"),
                                                  ("app-public", "RelatedPerson/carol"))]
            # one queued before requesters were kept is hers: she is the lane's patient
            legacy = outbox.enqueue(
                method="POST", resource_type="Observation", resource_id=None,
                body={"resourceType": "Observation"}, if_match=None, write_id=None,
                lane="pat-0001", client_id="app-public", error="test", retry_after=3600)
            listed = client.get("_outbox").json()
            assert [e["resource"]["id"] for e in listed["entry"]] == \
                [mine.json()["id"], legacy.id]
            for entry in theirs:
                assert client.get(f"_outbox/{entry.id}").status_code == 404
            for entry in [*theirs, legacy]:
                outbox.drop(entry.id)
        with env.fhir(bob) as client:
            assert client.get(status_url).status_code == 404
            assert client.get("_outbox").json()["total"] == 0
        assert live.get("_outbox").status_code == 401  # no token, no outbox
        up.start()
        deadline = time.monotonic() + 30
        with env.fhir(ann) as client:
            while time.monotonic() < deadline:
                task = client.get(status_url).json()
                if task["status"] == "completed":
                    break
                time.sleep(0.2)
        assert task["status"] == "completed", task
        ref = task["output"][0]["valueReference"]["reference"]
        rtype, rid = ref.split("/")[:2]
        assert live.adapter.read(rtype, rid)["code"] == {"text": "home reading"}
    finally:
        env.browser.close()
        stop()
        up.stop()


def test_served_front_logs_no_upstream_urls_or_search_values(tmp_path, upstream):
    """`fhir-gateway serve` with the REST adapter: the log has the gateway's one PHI-free line
    per request, and none of the outbound client's (httpx logs each request's full URL, query
    and all, at INFO)."""
    from tests.rest_support import UpstreamProcess

    marker = "Qxyzzyplugh"
    front = UpstreamProcess(tmp_path / "front", env={
        "FHIR_GATEWAY_ADAPTER": "fhir_rest", "FHIR_GATEWAY_FHIR_REST_BASE_URL": upstream.base,
        "FHIR_GATEWAY_FHIR_REST_VENDOR": "fhir-gateway"}).start()
    try:
        with httpx.Client(timeout=30, headers={"Accept": "application/fhir+json"}) as client:
            resp = client.get(f"{front.base}/Patient", params={"family": marker})
            assert resp.status_code == 200 and resp.json()["resourceType"] == "Bundle"
            assert client.get(f"{front.base}/Patient/pat-0001").status_code == 200
    finally:
        front.stop()
    log = front.log.read_text()
    assert log.count(" fhir_gateway.request GET /fhir/") >= 2, log[-2000:]
    assert marker not in log
    assert f"127.0.0.1:{upstream.port}" not in log
    assert "--- Logging error ---" not in log
