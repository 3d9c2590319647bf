"""Benchmark: the REST adapter's cost, against the same upstream and a bare Flask floor, in one run.

Six servers on loopback, each `gunicorn` gthread with the same workers and threads:
  (a) the upstream: `fhir-gateway serve` with its embedded store (synthetic patients), SMART off;
  (b) a gateway with `adapter.kind = fhir_rest` in front of it, cache off (TTL 0), SMART on;
  (c) the same with the read-through cache on, SMART on;
  (d) a bare Flask app returning the upstream's very bytes: the framework's floor;
  (e) a bare Flask proxy: each request forwarded to (a) over a kept-alive libcurl handle and
      its bytes returned as they came, what any pass-through pays here before doing anything
      (it waits for the upstream on the same cores, and its caches are cold after the wait);
  (f) the same proxy parsing the upstream's JSON (orjson) and writing it again: the least a
      pass-through pays that looks at what comes back, as a gateway that checks it must.
For Patient reads and `Observation?patient=<id>&_count=20` searches it measures throughput at
concurrency 4, p50/p99 latency at concurrency 1 and 4, and the CPU seconds per request of the
server's own processes (gunicorn master and workers: each thread's run time, from
/proc/<pid>/task/<tid>/schedstat, checked against utime + stime over the whole run). Each
phase runs `--runs` times (interleaved over the servers) and the median is quoted: gthread workers
with keep-alive clients sometimes serve a run slowly.

    .venv/bin/python bench/rest_bench.py [--quick] [--runs 3] [--patients 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.embedded import EmbeddedAdapter  # noqa: E402
from bench.common import free_port, machine  # noqa: E402
from fhir_gateway.synthetic import generate  # noqa: E402

FHIR_JSON = "application/fhir+json"
PATIENT = "pat-0001"
SEED_TODAY = dt.date(2026, 6, 15)
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORKERS, THREADS = 1, 4
TARGETS = {"a": "upstream direct", "b": "gateway uncached", "c": "gateway cached",
           "d": "bare Flask floor", "e": "bare Flask proxy", "f": "proxy parsing JSON"}
# Requests per phase are fixed; faster servers get more so their CPU time spans enough clock ticks.
SCALE = {"a": 2, "b": 1, "c": 1, "d": 8, "e": 1, "f": 1}

FLOOR_APP = '''\
"""The framework's floor: Flask under gunicorn returning fixed bytes (written by rest_bench)."""
from pathlib import Path

from flask import Flask, Response

HERE = Path(__file__).parent
READ = (HERE / "read.json").read_bytes()
SEARCH = (HERE / "search.json").read_bytes()
app = Flask(__name__)


@app.get("/fhir/Patient/<id>")
def read(id):
    return Response(READ, content_type="application/fhir+json")


@app.get("/fhir/Observation")
def search():
    return Response(SEARCH, content_type="application/fhir+json")
'''


PROXY_APP = '''\
"""A bare Flask proxy: the request forwarded to the upstream over a kept-alive libcurl handle
(one per thread), its bytes returned as they came (written by rest_bench)."""
import os
import threading

import orjson
import pycurl
from flask import Flask, Response, request

UPSTREAM = os.environ["BENCH_UPSTREAM"]
PARSE = os.environ.get("BENCH_PARSE") == "1"  # (f): parse the JSON and write it again
app = Flask(__name__)
handles = threading.local()


@app.get("/fhir/<path:rest>")
def forward(rest):
    curl = getattr(handles, "curl", None)
    if curl is None:
        curl = handles.curl = pycurl.Curl()
    chunks = []
    query = request.query_string.decode()
    curl.setopt(pycurl.URL, f"{UPSTREAM}/{rest}" + (f"?{query}" if query else ""))
    curl.setopt(pycurl.HTTPHEADER, ["Accept: application/fhir+json"])
    curl.setopt(pycurl.WRITEFUNCTION, chunks.append)
    curl.perform()
    body = b"".join(chunks)
    if PARSE:
        body = orjson.dumps(orjson.loads(body))
    return Response(body, status=curl.getinfo(pycurl.RESPONSE_CODE),
                    content_type="application/fhir+json")
'''


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    n = len(changed.splitlines())
    return f"{head}" + (f" + uncommitted changes in {n} files" if n else "")


def filesystem(path: Path) -> str:
    """The mount (device and type) holding `path`: SQLite commits wait for its fsync."""
    best = ("?", "?", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, point, kind = line.split()[:3]
            if str(path).startswith(point.rstrip("/") + "/") and len(point) >= len(best[2]):
                best = (dev, kind, point)
    except OSError:
        pass
    return f"{best[0]} ({best[1]})"


# -- CPU accounting from /proc ---------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 `state` is index 0)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (gunicorn master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(tree)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process (the load generator)."""
    times = os.times()
    return times.user + times.system


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def tick_seconds(pids: list[int]) -> float:
    """utime + stime of every thread of these processes, in seconds (10 ms clock ticks)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def _run_ns(pid: int) -> int | None:
    """The nanoseconds every thread of `pid` ran, from /proc/<pid>/task/*/schedstat; None
    where the kernel keeps no schedstat."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0  # the process is gone
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{tid}").exists():
                continue  # the thread ended just now
            return None
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of every thread of these processes: each thread's run time in nanoseconds
    (schedstat), as ticks of 10 ms would put a 33 µs step in a figure per request of 300
    requests. A thread that ends between two looks takes its time with it: the servers'
    threads live as long as they do (gthread's pool, the gateway's writers). Falls back to
    utime + stime (`tick_seconds`) where the kernel keeps no schedstat."""
    total = 0
    for pid in pids:
        ns = _run_ns(pid)
        if ns is None:
            return tick_seconds(pids)
        total += ns
    return total / 1e9


# -- the servers --------------------------------------------------------------------------------


@dataclass
class Server:
    key: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)

    def start(self, probe: str, timeout: float = 60.0) -> Server:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{TARGETS[self.key]} exited:\n"
                                 f"{self.log.read_text()[-2000:]}")
            try:
                status, _ = get("127.0.0.1", self.port, probe)
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"{TARGETS[self.key]} did not start:\n"
                             f"{self.log.read_text()[-2000:]}")
        # gunicorn forks its workers before they answer: the tree is complete now.
        self.pids = process_tree(self.proc.pid)
        return self

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass


def logged_requests(log: Path) -> int:
    """Requests a gateway served so far, from its one log line per request (the gateway
    writes its log lines in batches, a few times a second: wait for the last batch)."""
    time.sleep(0.4)
    with open(log, "rb") as fh:
        return sum(1 for line in fh if b" fhir_gateway.request GET " in line)


def gateway_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ, FHIR_GATEWAY_DATA=str(data), FHIR_GATEWAY_PORT=str(port),
               FHIR_GATEWAY_WORKERS=str(WORKERS), FHIR_GATEWAY_THREADS=str(THREADS), **extra)
    env.pop("FHIR_GATEWAY_CONFIG", None)
    return env


def serve_argv() -> list[str]:
    return [sys.executable, "-m", "fhir_gateway", "serve"]


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "fhir_gateway", *args], env=env, check=True,
                          capture_output=True, text=True, cwd=ROOT).stdout.strip()


def front_gateway(key: str, data: Path, upstream: str, ttl: int) -> tuple[Server, str]:
    """A SMART-on fhir_rest gateway; returns it (not started) and a patient token minted with
    the admin CLI against its own state database, as an app would hold after a launch."""
    port = free_port()
    env = gateway_env(data, port, FHIR_GATEWAY_AUTH_ENABLED="true",
                      FHIR_GATEWAY_ADAPTER="fhir_rest",
                      FHIR_GATEWAY_FHIR_REST_BASE_URL=upstream,
                      FHIR_GATEWAY_FHIR_REST_VENDOR="fhir-gateway",
                      FHIR_GATEWAY_FHIR_REST_DEFAULT_CACHE_TTL=str(ttl))
    data.mkdir(parents=True, exist_ok=True)
    cli(env, "clients", "add", "--client-id", "bench", "--public",
        "--redirect-uri", "http://127.0.0.1:9/cb")
    token = cli(env, "token", "--client-id", "bench", "--scope", "patient/*.rs",
                "--patient", PATIENT)
    return Server(key, serve_argv(), env, port, data / "server.log"), token


def bare_flask(key: str, folder: Path, module: str, env: dict[str, str]) -> Server:
    """`module:app` in `folder` under gunicorn, as the gateways run (not started)."""
    port = free_port()
    return Server(key, [
        sys.executable, "-m", "gunicorn", "--workers", str(WORKERS), "--threads",
        str(THREADS), "--worker-class", "gthread", "--keep-alive", "5", "--bind",
        f"127.0.0.1:{port}", "--chdir", str(folder), f"{module}:app"],
        dict(os.environ, **env), port, folder / f"{module}-{key}.log")


# -- the load generator -------------------------------------------------------------------------


def get(host: str, port: int, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    size: int  # bytes of the last answer


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def load(server: Server, path: str, headers: dict[str, str], concurrency: int, count: int,
         warmup: int) -> Run:
    """`count` GETs of `path` over `concurrency` keep-alive connections (one thread each),
    after `warmup` GETs per connection; server CPU is read around the measured part only."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    sizes = [0]
    lock = threading.Lock()
    issued = [0]
    marks: dict[str, float] = {}

    def begin() -> None:  # runs once, in one thread, when every connection is warm
        marks["cpu"] = server.cpu()
        marks["t"] = time.perf_counter()

    barrier = threading.Barrier(concurrency, action=begin)

    def one(conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
        for attempt in (1, 2):
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()  # the server closed an idle keep-alive connection: reconnect
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                if attempt == 2:
                    raise
        if resp.status != 200:
            raise RuntimeError(f"{TARGETS[server.key]}: {path} answered {resp.status}: "
                               f"{body[:300]!r}")
        sizes[0] = len(body)
        return conn

    def worker(mine: list[float]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            for _ in range(warmup):
                conn = one(conn)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        clock = time.perf_counter
        try:
            while True:
                with lock:
                    if issued[0] >= count:
                        break
                    issued[0] += 1
                started = clock()
                conn = one(conn)
                mine.append(clock() - started)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(latencies[i],), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ended, cpu_after = time.perf_counter(), server.cpu()
    if errors:
        raise errors[0]
    flat = sorted(x for per in latencies for x in per)
    return Run(rps=count / (ended - marks["t"]), p50_ms=percentile(flat, 0.5) * 1000,
               p99_ms=percentile(flat, 0.99) * 1000,
               cpu_us=(cpu_after - marks["cpu"]) / count * 1e6, size=sizes[0])


def client_cost(port: int, path: str, count: int) -> dict[str, float]:
    """CPU µs per GET of the outbound client alone, in this process (one thread, keep-alive):
    the REST adapter's `UpstreamClient.send` over its default curl wire and over httpx's
    transport (both parse the JSON), `httpx.Client`, and http.client, the standard library's
    floor."""
    import httpx

    from adapters.fhir_rest.client import UpstreamClient
    from adapters.fhir_rest.settings import RestSettings

    out = {}
    upstream = {kind: UpstreamClient(RestSettings(base_url=f"http://127.0.0.1:{port}/fhir",
                                                  retries=0, transport=kind))
                for kind in ("curl", "httpx")}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/fhir/",
                      headers={"Accept": FHIR_JSON}) as client:
        rel = path.removeprefix("/fhir/")

        def with_curl() -> None:
            upstream["curl"].send("GET", rel)

        def with_upstream_httpx() -> None:
            upstream["httpx"].send("GET", rel)

        def with_httpx() -> None:
            client.get(rel).read()

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def with_http_client() -> None:
            conn.request("GET", path, headers={"Accept": FHIR_JSON})
            conn.getresponse().read()

        for name, call in (("UpstreamClient.send (curl)", with_curl),
                           ("UpstreamClient.send (httpx transport)", with_upstream_httpx),
                           ("httpx.Client", with_httpx), ("http.client", with_http_client)):
            for _ in range(20):
                call()
            started = time.process_time()
            for _ in range(count):
                call()
            out[name] = (time.process_time() - started) / count * 1e6
        conn.close()
    for one in upstream.values():
        one.close()
    return out


# -- the report -----------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, f) for r in runs)
                 for f in ("rps", "p50_ms", "p99_ms", "cpu_us", "size")))


def report(workload: str, c1: dict[str, Run], c4: dict[str, Run], runs: int,
           concurrency: int) -> None:
    print(f"\n{workload}  (median of {runs} runs; CPU = the server's own processes, "
          "run time of their threads)")
    print(f"{'':22}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}{'x (d)':>7}"
          f"  |{'p50 ms':>8}{'p99 ms':>9}{'CPU µs/req':>12}{'x (d)':>7}{'bytes':>8}")
    print(f"{'':22}{f'c={concurrency}':>8}{'-------- concurrency 1 --------':>37}  |"
          f"{f'------ concurrency {concurrency} ------':>36}")
    floor1, floor4 = c1["d"].cpu_us, c4["d"].cpu_us
    for key, name in TARGETS.items():
        one, many = c1[key], c4[key]
        print(f"({key}) {name:18}{many.rps:>8,.0f}{one.p50_ms:>9.2f}{one.p99_ms:>9.2f}"
              f"{one.cpu_us:>12,.0f}{one.cpu_us / floor1:>7.2f}  |{many.p50_ms:>8.2f}"
              f"{many.p99_ms:>9.2f}{many.cpu_us:>12,.0f}{many.cpu_us / floor4:>7.2f}"
              f"{many.size:>8,}")
    a = c1["a"].p50_ms
    print(f"added p50 at concurrency 1: (b)-(a) {c1['b'].p50_ms - a:+.2f} ms, "
          f"(c)-(a) {c1['c'].p50_ms - a:+.2f} ms, (e)-(a) {c1['e'].p50_ms - a:+.2f} ms   "
          f"[targets: CPU (b) <= 2.0x (d), (c) <= 1.5x (d); added p50 < 2 ms]")
    print(f"the uncached gateway against the bare proxy: CPU (b)/(e) "
          f"{c1['b'].cpu_us / c1['e'].cpu_us:.2f} at concurrency 1, "
          f"{c4['b'].cpu_us / c4['e'].cpu_us:.2f} at {concurrency}; the proxy's own "
          f"(e)/(d) {c1['e'].cpu_us / floor1:.2f}")


# -- main -------------------------------------------------------------------------------------


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--runs", type=int, help="repeats per phase; the median is quoted")
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4, help="for the throughput phase")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    # requests per phase for the gateways, times SCALE: (concurrency 1, concurrency N); warm-up
    # requests per connection
    n1, n4, warm = (60, 120, 20) if args.quick else (300, 600, 50)

    # Stop the servers on Ctrl-C (KeyboardInterrupt), kill or hang-up, unless told to ignore it.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _terminate)
    print(f"machine: {machine()}")
    print(f"code: {code_version()}")
    print(f"servers: gunicorn gthread {WORKERS} worker x {THREADS} threads each, keep-alive; "
          f"client: http.client, one thread per connection, in this process")
    tmp = Path(tempfile.mkdtemp(prefix="rest-bench-"))
    with ExitStack() as stack:
        if args.keep:
            print(f"data: {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        servers: dict[str, Server] = {}
        stack.callback(lambda: [s.stop() for s in servers.values()])

        # (a) the upstream: a plain gateway over a seeded embedded store, SMART off
        up_data = tmp / "upstream"
        up_data.mkdir()
        resources = generate(args.patients, 7, SEED_TODAY)
        store = EmbeddedAdapter(f"sqlite:///{up_data / 'ehr.sqlite3'}")
        store.load(resources)
        store.close()
        port = free_port()
        servers["a"] = Server("a", serve_argv(), gateway_env(
            up_data, port, FHIR_GATEWAY_AUTH_ENABLED="false"), port, up_data / "server.log")
        servers["a"].start("/fhir/metadata")
        upstream = f"http://127.0.0.1:{port}/fhir"

        paths = {"read": f"/fhir/Patient/{PATIENT}",
                 "search": f"/fhir/Observation?patient={PATIENT}&_count=20"}
        accept = {"Accept": FHIR_JSON}
        bodies = {}
        for name, path in paths.items():
            status, bodies[name] = get("127.0.0.1", port, path, accept)
            assert status == 200, (path, status)
        entries = bodies["search"].count(b'"fullUrl"')
        print(f"upstream: {len(resources)} resources for {args.patients} patients; "
              f"Patient read {len(bodies['read']):,} B, Observation search "
              f"{len(bodies['search']):,} B ({entries} entries)")

        # (b), (c): SMART-on fhir_rest gateways, cache off and on; a patient token each
        tokens = {}
        servers["b"], tokens["b"] = front_gateway("b", tmp / "uncached", upstream, ttl=0)
        servers["c"], tokens["c"] = front_gateway("c", tmp / "cached", upstream, ttl=300)
        # (d): the bare Flask floor, serving the upstream's bytes
        floor = tmp / "floor"
        floor.mkdir()
        (floor / "read.json").write_bytes(bodies["read"])
        (floor / "search.json").write_bytes(bodies["search"])
        (floor / "floor_app.py").write_text(FLOOR_APP)
        servers["d"] = bare_flask("d", floor, "floor_app", {})
        # (e): the bare Flask proxy in front of (a)
        (floor / "proxy_app.py").write_text(PROXY_APP)
        servers["e"] = bare_flask("e", floor, "proxy_app", {"BENCH_UPSTREAM": upstream})
        servers["f"] = bare_flask("f", floor, "proxy_app", {"BENCH_UPSTREAM": upstream,
                                                            "BENCH_PARSE": "1"})
        for key in "bcdef":
            servers[key].start("/fhir/metadata" if key in "bc" else paths["read"])

        headers = {key: dict(accept) for key in TARGETS}
        for key in "bc":
            headers[key]["Authorization"] = f"Bearer {tokens[key]}"
        for key in "bc":  # the token is checked: without it the gateway answers 401
            status, _ = get("127.0.0.1", servers[key].port, paths["read"], accept)
            assert status == 401, f"{TARGETS[key]} answered {status} without a token"

        print(f"load average before the measurements: {load_average()}", flush=True)
        started = time.perf_counter()
        ours = own_cpu() + sum(s.cpu() for s in servers.values())
        run_cpu = {key: (s.cpu(), tick_seconds(s.pids)) for key, s in servers.items()}
        busy = machine_busy()
        results = {w: {c: {k: [] for k in TARGETS} for c in (1, args.concurrency)}
                   for w in paths}
        forwarded = {key: [0, 0] for key in "bc"}  # upstream requests, gateway requests
        for r in range(runs):
            for workload, path in paths.items():
                for key, server in servers.items():
                    before = logged_requests(servers["a"].log)
                    for conc, count in ((1, n1), (args.concurrency, n4)):
                        results[workload][conc][key].append(
                            load(server, path, headers[key], conc, count * SCALE[key], warm))
                    if key in forwarded:
                        forwarded[key][0] += logged_requests(servers["a"].log) - before
                        forwarded[key][1] += (n1 + n4 + warm * (1 + args.concurrency))
            print(f"run {r + 1}/{runs} done ({time.perf_counter() - started:.0f}s)", flush=True)
        wall = time.perf_counter() - started
        ours = own_cpu() + sum(s.cpu() for s in servers.values()) - ours
        others = max(0.0, machine_busy() - busy - ours)
        print(f"during the measurements ({wall:.0f}s): this benchmark used {ours / wall:.2f} "
              f"cores, other processes {others / wall:.2f} of {os.cpu_count()}; load average "
              f"now {load_average()}")
        print("server CPU over the measurements, run time (schedstat) against utime + stime: "
              + ", ".join(f"({key}) {s.cpu() - run_cpu[key][0]:.2f}/"
                          f"{tick_seconds(s.pids) - run_cpu[key][1]:.2f} s"
                          for key, s in servers.items()))
        print("upstream requests per gateway request: " + ", ".join(
            f"({key}) {up / total:.2f}" for key, (up, total) in forwarded.items()))

        clients = {w: client_cost(servers["a"].port, path, n1) for w, path in paths.items()}
        for workload, label in (("read", f"GET Patient/{PATIENT}"),
                                ("search", f"GET Observation?patient={PATIENT}&_count=20")):
            c1 = {k: median_run(v) for k, v in results[workload][1].items()}
            c4 = {k: median_run(v) for k, v in results[workload][args.concurrency].items()}
            report(label, c1, c4, runs, args.concurrency)
            floor = c1["d"].cpu_us
            print("the outbound call alone, CPU in the client process: " + ", ".join(
                f"{name} {us:,.0f} µs ({us / floor:.2f} x (d))"
                for name, us in clients[workload].items()))
        print("\n" + textwrap.fill(
            "(a) the upstream itself (embedded store, SMART off); (b)/(c) fhir_rest gateways in "
            "front of it with SMART on (a patient token checked on every request: RS256, jti "
            "lookup, access decision, audit append), cache TTL 0 and 300 s; (d) bare Flask "
            "returning (a)'s bytes; (e) bare Flask forwarding each request to (a) over libcurl; "
            "(f) the same parsing the JSON and writing it again (orjson). "
            "CPU of (b)/(c)/(e)/(f) excludes the upstream's. Per run and server, "
            f"{n1} requests at concurrency 1 and {n4} at {args.concurrency} (times {SCALE['a']} "
            f"for (a), {SCALE['d']} for (d)), after {warm} per connection to warm up; server "
            f"CPU is each thread's run time (schedstat, ns). SQLite state databases on "
            f"{filesystem(tmp)}.",
            width=98))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        raise SystemExit("interrupted: servers stopped") from None
