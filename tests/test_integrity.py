"""Every seeded resource and every imported Synthea resource: valid R4, every reference resolves.

Validation here is the gateway's own inbound check (R4B models plus the R4 required bindings),
so whatever the store serves would also be accepted back on a write.
"""

from __future__ import annotations

import pytest

from adapters.embedded import EmbeddedAdapter
from adapters.errors import Invalid
from fhir_gateway.cli import main as cli_main
from fhir_gateway.validation import validate_resource
from mappings.references import iter_references
from tests.conftest import SEED_TODAY, shared_testdata


def _problems(store: EmbeddedAdapter) -> tuple[int, list[str]]:
    """(resources walked, problems): invalid resources and references that do not resolve."""
    resources = list(store.iter_all())
    known = {(r["resourceType"], r["id"]) for r in resources}
    problems = []
    for res in resources:
        label = f"{res['resourceType']}/{res['id']}"
        try:
            validate_resource(res)
        except Invalid as exc:
            problems.append(f"{label} invalid: {exc.diagnostics} at {exc.expression}")
        contained = {c.get("id") for c in res.get("contained", [])}
        for path, ref in iter_references(res):
            if ref.startswith("#"):
                if ref[1:] not in contained:
                    problems.append(f"{label}.{path}: contained {ref} missing")
                continue
            parts = ref.split("/")
            if len(parts) != 2 or (parts[0], parts[1]) not in known:
                problems.append(f"{label}.{path}: {ref} does not resolve")
    return len(resources), problems


def _config_env(monkeypatch, tmp_path) -> str:
    monkeypatch.setenv("FHIR_GATEWAY_DATA", str(tmp_path))
    monkeypatch.delenv("FHIR_GATEWAY_CONFIG", raising=False)
    monkeypatch.delenv("FHIR_GATEWAY_EHR_DATABASE_URL", raising=False)
    return f"sqlite:///{tmp_path / 'ehr.sqlite3'}"


def test_seeded_store_is_valid_and_closed(monkeypatch, tmp_path, capsys):
    url = _config_env(monkeypatch, tmp_path)
    assert cli_main(["seed", "--patients", "5", "--seed", "3",
                     "--today", SEED_TODAY.isoformat()]) == 0
    assert "Seeded" in capsys.readouterr().out
    store = EmbeddedAdapter(url)
    walked, problems = _problems(store)
    store.close()
    assert walked > 500
    assert problems == []


@pytest.mark.shared_data
def test_synthea_bundles_import_whole_and_resolve(monkeypatch, tmp_path, capsys):
    folder = shared_testdata("synthea-r4")
    files = sorted(str(p) for p in folder.glob("*.json"))
    assert len(files) == 24
    expected = 0
    import orjson

    for name in files:
        expected += len(orjson.loads(open(name, "rb").read())["entry"])
    url = _config_env(monkeypatch, tmp_path)
    assert cli_main(["import", *files]) == 0
    out = capsys.readouterr().out
    assert f"Imported {expected} resources from 24 files" in out
    store = EmbeddedAdapter(url)
    assert store.count() == expected
    walked, problems = _problems(store)
    store.close()
    assert walked == expected
    assert problems == []


@pytest.mark.shared_data
def test_a_broken_bundle_is_refused_whole(monkeypatch, tmp_path, capsys):
    """One bad entry in a Synthea bundle: the file is refused and nothing of it is stored."""
    import orjson

    folder = shared_testdata("synthea-r4")
    source = sorted(folder.glob("[A-Z]*.json"))[0]
    bundle = orjson.loads(source.read_bytes())
    last_obs = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"][-1]
    last_obs["resource"]["status"] = "not-a-status"
    broken = tmp_path / "broken.json"
    broken.write_bytes(orjson.dumps(bundle))
    url = _config_env(monkeypatch, tmp_path)
    assert cli_main(["import", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "broken.json: not imported" in err and "not-a-status" in err
    store = EmbeddedAdapter(url)
    assert store.count() == 0
    store.close()
