"""Benchmark: the gateway over HTTP against the embedded store called directly, in one run.

Prints Patient reads/s and searches/s both ways and their ratio (the cost of the HTTP surface:
parsing, negotiation, validation of parameters, Bundle building), resources validated per second,
and Synthea import resources per second. Everything runs on loopback with bounded loops.

    .venv/bin/python bench/gateway_bench.py [--seconds 3] [--patients 20]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.embedded import EmbeddedAdapter  # noqa: E402
from adapters.search import ParamClause, SearchQuery  # noqa: E402
from bench.common import free_port, machine  # noqa: E402
from fhir_gateway.synthetic import generate  # noqa: E402
from fhir_gateway.validation import validate_resource  # noqa: E402


def rate(fn, seconds: float, max_calls: int = 200_000) -> float:
    """Calls per second of `fn` over about `seconds` (bounded by `max_calls`)."""
    fn()  # warm up
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while calls < max_calls and time.perf_counter() < deadline:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def start_server(data: Path, port: int, threads: int) -> subprocess.Popen:
    env = dict(os.environ, FHIR_GATEWAY_DATA=str(data), FHIR_GATEWAY_THREADS=str(threads),
               FHIR_GATEWAY_AUTH_ENABLED="false")
    env.pop("FHIR_GATEWAY_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_gateway", "serve", "--host", "127.0.0.1", "--port",
         str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="HTTP runs; the median is quoted")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        resources = generate(args.patients, 42)
        store = EmbeddedAdapter(f"sqlite:///{data / 'ehr.sqlite3'}")
        started = time.perf_counter()
        store.load(resources)
        load_s = time.perf_counter() - started
        print(f"seeded {len(resources)} resources in {load_s:.2f}s "
              f"({len(resources) / load_s:,.0f} resources/s, store.load)")

        pid = "pat-0001"
        query = [ParamClause("family", "string", ["a"])]
        direct_read = rate(lambda: store.read("Patient", pid), args.seconds)
        direct_search = rate(lambda: store.search(
            "Patient", SearchQuery(clauses=list(query), count=10)), args.seconds)

        # The same app called as WSGI in this process: the gateway's own cost without HTTP.
        from fhir_gateway.app import create_app
        from fhir_gateway.config import load_config

        app = create_app(load_config(env={"FHIR_GATEWAY_DATA": str(data),
                                          "FHIR_GATEWAY_AUTH_ENABLED": "false"}), store)

        def wsgi(path: str, query: str) -> None:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query,
                       "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1",
                       "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
                       "HTTP_ACCEPT": "application/fhir+json", "wsgi.input": io.BytesIO()}
            b"".join(app.wsgi_app(environ, lambda status, headers: None))

        wsgi_read = rate(lambda: wsgi(f"/fhir/Patient/{pid}", ""), args.seconds)
        wsgi_search = rate(lambda: wsgi("/fhir/Patient", "family=a&_count=10"), args.seconds)

        # The same with SMART on: bearer-token verification, access decision, audit append.
        secure = create_app(load_config(env={"FHIR_GATEWAY_DATA": str(data / "smart")}), store)
        smart = secure.extensions["smart"]
        smart.clients.add("bench", "public", redirect_uris=["http://127.0.0.1:9/cb"])
        token = smart.mint(smart.clients.get("bench"), "patient/*.rs", patient=pid)

        def secure_read() -> None:
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/fhir/Patient/{pid}",
                       "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
                       "HTTP_HOST": "127.0.0.1:8080", "wsgi.url_scheme": "http",
                       "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_ACCEPT": "application/fhir+json",
                       "HTTP_AUTHORIZATION": f"Bearer {token}", "wsgi.input": io.BytesIO()}
            status = []
            b"".join(secure.wsgi_app(environ, lambda s, h: status.append(s)))
            assert status[0].startswith("200"), status

        smart_read = rate(secure_read, args.seconds)

        port = free_port()
        proc = start_server(data, port, threads=4)
        base = f"http://127.0.0.1:{port}/fhir"
        http_read, http_search = [], []
        try:
            with httpx.Client(headers={"Accept": "application/fhir+json"}) as client:
                def read() -> None:
                    client.get(f"{base}/Patient/{pid}").raise_for_status()

                def search() -> None:
                    client.get(f"{base}/Patient", params={"family": "a", "_count": "10"}
                               ).raise_for_status()

                for _ in range(args.runs):
                    http_read.append(rate(read, args.seconds))
                    http_search.append(rate(search, args.seconds))
        finally:
            proc.terminate()
            proc.wait(10)
        store.close()

        hr, hs = statistics.median(http_read), statistics.median(http_search)
        print("\nPatient reads and searches, one client thread, keep-alive "
              f"(HTTP: median of {args.runs} runs, gunicorn gthread 1 worker x 4 threads)")
        print(f"{'':24}{'direct store':>14}{'gateway WSGI':>14}{'ratio':>7}"
              f"{'gateway HTTP':>14}{'ratio':>7}")
        for label, direct, inproc, http in (
                ("read  Patient/id", direct_read, wsgi_read, hr),
                ("search Patient?family", direct_search, wsgi_search, hs)):
            print(f"{label:24}{direct:>12,.0f}/s{inproc:>12,.0f}/s{inproc / direct:>7.2f}"
                  f"{http:>12,.0f}/s{http / direct:>7.2f}")
        print("(WSGI: the app called in-process, no socket; HTTP: httpx client and gunicorn "
              "server sharing the machine's cores)")
        print(f"read Patient/id, WSGI, SMART on (token check, confinement, audit append): "
              f"{smart_read:,.0f}/s, {smart_read / wsgi_read:.2f} of SMART off")

        sample = resources[: min(len(resources), 3000)]
        started = time.perf_counter()
        for res in sample:
            validate_resource(res)
        val_s = time.perf_counter() - started
        print(f"\nvalidation (R4B models + required bindings): {len(sample) / val_s:,.0f} "
              f"resources/s over {len(sample)} seeded resources")

        synthea = ROOT.parent / "shared" / "testdata" / "synthea-r4"
        files = sorted(synthea.glob("*.json")) if synthea.is_dir() else []
        if files:
            env = dict(os.environ, FHIR_GATEWAY_DATA=str(data / "import"))
            env.pop("FHIR_GATEWAY_CONFIG", None)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "fhir_gateway", "import",
                                  *map(str, files)], env=env, capture_output=True, text=True,
                                 check=True).stdout
            wall = time.perf_counter() - started
            last = out.strip().splitlines()[-1]  # "Imported N resources from F files in Xs"
            count = int(last.split()[1])
            inner = float(last.rsplit(" ", 1)[1].rstrip("s"))
            print(f"Synthea import: {count} resources from {len(files)} files: "
                  f"{count / inner:,.0f} resources/s (validated, indexed, SQLite; "
                  f"{wall:.1f}s wall with process start)")
        else:
            print("Synthea import: skipped (../shared/testdata/synthea-r4 not present)")


if __name__ == "__main__":
    main()
