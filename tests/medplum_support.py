"""An independent FHIR R4 server for tests: Medplum's FHIR router over its in-memory
repository, run by Node from tests/medplum/server.mjs on a free loopback port.

    base, stop = start_medplum()   # base == "http://127.0.0.1:PORT/fhir"
    ...
    stop()

or, in a test module, `from tests.medplum_support import medplum_base` and take the fixture.
Without node/npm (or with a Node older than Medplum needs) this skips, or fails under
GATEWAY_REQUIRE_NODE=1. Each server starts empty and keeps its data only in memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import free_port, skip_or_fail

MEDPLUM_DIR = Path(__file__).resolve().parent / "medplum"
SERVER_SCRIPT = MEDPLUM_DIR / "server.mjs"
REQUIRE_ENV = "GATEWAY_REQUIRE_NODE"
READY_TIMEOUT = 60.0
NPM_CI_TIMEOUT = 600.0
# @medplum/* 4.5.x declare engines "^20.19.0 || >=22.12.0".
MIN_NODE = (20, 19)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(REQUIRE_ENV, f"`{name}` is not on PATH: the Medplum test FHIR server needs "
                                  "Node.js and npm")
    assert path is not None  # skip_or_fail raised
    return path


def _node_version(node: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30,
                             check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        skip_or_fail(REQUIRE_ENV, f"`{node} --version` failed: {exc}")
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        skip_or_fail(REQUIRE_ENV, f"cannot read the Node.js version from {out!r}")
    assert match is not None  # skip_or_fail raised
    return tuple(int(part) for part in match.groups())


def _modules_current() -> bool:
    """Whether node_modules holds every pinned dependency at its pinned version."""
    wanted = json.loads((MEDPLUM_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        installed = MEDPLUM_DIR / "node_modules" / name / "package.json"
        try:
            if json.loads(installed.read_text()).get("version") != version:
                return False
        except (OSError, ValueError):
            return False
    return (MEDPLUM_DIR / "node_modules" / ".package-lock.json").is_file()


def _npm_error_summary(done: subprocess.CompletedProcess[str]) -> str:
    """npm's error code (if it printed one) and the last line of its error that says something
    (npm ends with a pointer to its log file, which says nothing)."""
    lines = [ln.strip() for ln in (done.stdout + "\n" + done.stderr).splitlines()]
    lines = [ln for ln in lines if ln and ln not in ("npm error", "npm ERR!")
             and "complete log of this run" not in ln]
    code = next((ln for ln in lines if re.match(r"npm (error|ERR!) code ", ln)), None)
    last = lines[-1] if lines else f"exit code {done.returncode}"
    return f"{code}; {last}" if code and code != last else last


def _lock_path() -> Path:
    digest = hashlib.sha256(str(MEDPLUM_DIR).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gateway-medplum-npm-{digest}.lock"


def ensure_node_modules(npm: str | None = None) -> None:
    """Run `npm ci` in tests/medplum unless its node_modules is already installed as pinned.

    Serialised by a file lock so parallel test runs on one machine do not install at once."""
    if _modules_current():
        return
    npm = npm or _tool("npm")
    with open(_lock_path(), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _modules_current():
                return
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"], cwd=MEDPLUM_DIR,
                    capture_output=True, text=True, timeout=NPM_CI_TIMEOUT,
                    stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                skip_or_fail(REQUIRE_ENV,
                             f"npm ci in {MEDPLUM_DIR} took over {NPM_CI_TIMEOUT:.0f} s")
            except OSError as exc:
                skip_or_fail(REQUIRE_ENV, f"npm ci in {MEDPLUM_DIR} could not run: {exc}")
            if done.returncode != 0 or not _modules_current():
                skip_or_fail(REQUIRE_ENV, f"npm ci in {MEDPLUM_DIR} failed: "
                                          f"{_npm_error_summary(done)}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _drain(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    """Read the server's stdout to its end, so it can never block on a full pipe."""
    try:
        for line in stream:
            lines.put(line.rstrip("\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def _stopper(proc: subprocess.Popen[str], stderr: IO[bytes]) -> Callable[[], None]:
    lock = threading.Lock()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        with lock:
            if stopped:
                return
            stopped = True
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        stderr.close()

    return stop


def _read_stderr(stderr: IO[bytes]) -> str:
    stderr.flush()
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    return text[-4000:] if text else "(nothing on stderr)"


def _start_once(node_cmd: list[str]) -> tuple[str, Callable[[], None]] | str:
    """Start one server; its (base, stop), or the stderr of a server that lost its port."""
    port = free_port()
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [*node_cmd, str(SERVER_SCRIPT), str(port)], cwd=MEDPLUM_DIR,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
    stop = _stopper(proc, stderr)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True,
                     name=f"medplum-stdout-{port}").start()

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop()
            pytest.fail(f"the Medplum FHIR server gave no READY within {READY_TIMEOUT:.0f} s; "
                        f"stderr:\n{_read_stderr(stderr)}")
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:  # stdout closed: the server exited
            proc.wait(timeout=10)
            err = _read_stderr(stderr)
            stop()
            if "EADDRINUSE" in err or "address already in use" in err:
                return err
            pytest.fail(f"the Medplum FHIR server exited with {proc.returncode} before READY; "
                        f"stderr:\n{err}")
        if line.strip() == f"READY {port}":
            return f"http://127.0.0.1:{port}/fhir", stop


def start_medplum() -> tuple[str, Callable[[], None]]:
    """Start a fresh Medplum FHIR R4 server on loopback.

    Returns its FHIR base URL (`http://127.0.0.1:PORT/fhir`) and a function that stops it
    (safe to call more than once)."""
    node = _tool("node")
    npm = _tool("npm")
    version = _node_version(node)
    if version[:2] < MIN_NODE:
        skip_or_fail(REQUIRE_ENV, f"Node.js {'.'.join(map(str, version))} is too old for "
                                  f"@medplum 4.5 (needs {MIN_NODE[0]}.{MIN_NODE[1]} or newer)")
    ensure_node_modules(npm)
    node_cmd = [node]
    if version[0] < 22:  # Node 20 has WebSocket only behind this flag; @medplum/core expects it
        node_cmd.append("--experimental-websocket")

    last_err = ""
    for _ in range(3):  # free_port() can race with another process taking the port
        started = _start_once(node_cmd)
        if isinstance(started, tuple):
            return started
        last_err = started
    pytest.fail(f"the Medplum FHIR server found no free port in 3 tries; stderr:\n{last_err}")


@pytest.fixture(scope="module")
def medplum_base() -> Iterator[str]:
    """The FHIR base URL of a Medplum server that lives for the test module."""
    base, stop = start_medplum()
    try:
        yield base
    finally:
        stop()


__all__ = ["MEDPLUM_DIR", "ensure_node_modules", "medplum_base", "start_medplum"]
