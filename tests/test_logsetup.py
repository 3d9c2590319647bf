"""The server's batched log handler: lines are written a few times a second, warnings at once,
each line exactly once, also in forked workers (gunicorn forks after logging is set up)."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from fhir_gateway.logsetup import QUIET_LOGGERS, BatchedStreamHandler, configure_logging, log_later


def make(path, interval=0.2) -> tuple[logging.Logger, BatchedStreamHandler]:
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the handler's user
    handler = BatchedStreamHandler(stream, interval=interval)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.logsetup.{path.name}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger, handler


def wait_for(path, lines: list[str], timeout=5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text().splitlines()
        if got == lines:
            return got
        time.sleep(0.02)
    return path.read_text().splitlines()


def test_info_lines_are_written_in_a_batch_and_warnings_at_once(tmp_path):
    path = tmp_path / "a.log"
    logger, handler = make(path, interval=30)  # the timer never fires during this test
    logger.info("one")
    logger.info("two")
    assert path.read_text() == ""  # gathered, not yet written
    logger.warning("three")  # written at once, after what came before it
    assert path.read_text().splitlines() == ["one", "two", "three"]
    logger.info("four")
    handler.flush()
    assert path.read_text().splitlines() == ["one", "two", "three", "four"]
    handler.close()


def test_the_writer_thread_writes_without_being_asked(tmp_path):
    path = tmp_path / "b.log"
    logger, handler = make(path, interval=0.05)
    logger.info("by the timer")
    assert wait_for(path, ["by the timer"]) == ["by the timer"]
    handler.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_writes_its_own_lines_and_not_its_parents(tmp_path):
    path = tmp_path / "c.log"
    logger, handler = make(path, interval=0.05)
    logger.info("parent before fork")  # pending in the parent when it forks
    handler.later(logger, logging.INFO, "parent later", ())  # queued, not yet made
    pid = os.fork()
    if pid == 0:  # the child: no explicit flush; its own writer thread must write
        try:
            logger.info("child")
            time.sleep(0.5)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    handler.flush()
    lines = path.read_text().splitlines()
    assert sorted(lines) == ["child", "parent before fork", "parent later"], lines
    handler.close()


def test_configure_logging_quiets_libraries_that_log_urls(tmp_path):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging._srcfile)
    try:
        path = tmp_path / "d.log"
        with open(path, "a", encoding="utf-8") as stream:
            handler = configure_logging(stream)
            logging.getLogger("httpx").info("HTTP Request: GET http://ehr/Patient?name=Ana")
            logging.getLogger("fhir_gateway.request").info("GET /fhir/<rtype> 200")
            handler.flush()
            text = path.read_text()
        assert "name=Ana" not in text and "fhir_gateway.request GET /fhir/<rtype> 200" in text
        assert all(logging.getLogger(n).level == logging.WARNING for n in QUIET_LOGGERS)
        handler.close()
    finally:
        root.handlers[:], _, logging._srcfile = saved[0], None, saved[2]
        root.setLevel(saved[1])


@pytest.fixture
def batched_root(tmp_path):
    """A batched handler on a file, and `alone()`, which leaves it the root logger's only
    handler as `configure_logging` does (called in the test: pytest adds its capture handler
    to the root when the test starts); the root is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    path = tmp_path / "later.log"
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    handler = BatchedStreamHandler(stream, interval=30)  # the timer never fires here
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(threadName)s %(message)s"))

    def alone() -> None:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    try:
        yield path, handler, alone
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        handler.close()
        stream.close()


def test_a_later_line_is_made_by_the_writer_with_the_callers_time_and_thread(batched_root):
    path, handler, alone = batched_root
    alone()
    logger = logging.getLogger("test.logsetup.later")
    seen = []

    class Spy(logging.Filter):  # filters run when the record is made: not at the call
        def filter(self, record):
            seen.append(record.getMessage())
            return True

    spy = Spy()
    logger.addFilter(spy)
    try:
        log_later(logger, "GET %s %d", "/fhir/<rtype>", 200)
        assert seen == [] and handler._later  # queued, no record made yet
        time.sleep(1.1)  # a later synchronous line is written after it, though made first
        logger.info("after")
        flusher = threading.Thread(target=handler.flush, name="flusher")  # as the writer
        flusher.start()
        flusher.join()
    finally:
        logger.removeFilter(spy)
    lines = path.read_text().splitlines()
    assert seen == ["after", "GET /fhir/<rtype> 200"]  # made at the flush, written first
    assert [line.split(" ", 3)[3] for line in lines] == [
        "MainThread GET /fhir/<rtype> 200", "MainThread after"], lines
    first, second = (line[:19] for line in lines)  # asctime: the call's time, not the writer's
    assert first < second, lines


def test_a_warning_writes_the_later_lines_before_it(batched_root):
    path, handler, alone = batched_root
    alone()
    logger = logging.getLogger("test.logsetup.warn")
    log_later(logger, "one")
    logger.warning("two")  # written at once, with what was queued before it
    assert [line.rsplit(" ", 1)[1] for line in path.read_text().splitlines()] == ["one", "two"]


def test_log_later_honours_the_level_and_logs_at_once_beside_another_handler(batched_root,
                                                                              caplog):
    path, handler, alone = batched_root
    alone()
    logger = logging.getLogger("test.logsetup.level")
    logger.setLevel(logging.WARNING)
    try:
        log_later(logger, "quiet")
        assert not handler._later
    finally:
        logger.setLevel(logging.NOTSET)
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # a second handler (a test's capture) sees it at once
    try:
        log_later(logger, "seen at once")
        assert [r.getMessage() for r in caplog.records] == ["seen at once"]
        assert not handler._later
    finally:
        root.removeHandler(caplog.handler)


def test_a_warning_waits_for_a_flush_under_way(batched_root):
    """While the writer is making queued lines, a warning's own flush waits for it: the
    warning is written after the lines queued before it (and an exit's flush would wait too)."""
    path, handler, alone = batched_root
    alone()
    logger = logging.getLogger("test.logsetup.race")
    making, release = threading.Event(), threading.Event()

    class Slow(logging.Filter):  # holds the writer while it makes the queued record
        def filter(self, record):
            if record.getMessage() == "queued":
                making.set()
                release.wait(5)
            return True

    slow = Slow()
    logger.addFilter(slow)
    try:
        log_later(logger, "queued")
        writer = threading.Thread(target=handler.flush)
        writer.start()
        assert making.wait(5)
        warner = threading.Thread(target=logger.warning, args=("warned",))
        warner.start()
        time.sleep(0.2)  # the warning has had every chance to be written first
        release.set()
        writer.join(5)
        warner.join(5)
    finally:
        logger.removeFilter(slow)
    assert [line.rsplit(" ", 1)[1] for line in path.read_text().splitlines()] == [
        "queued", "warned"]
