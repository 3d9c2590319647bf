"""The server's logging: one PHI-free line per request, written in batches.

Libraries whose INFO lines name upstream URLs with their query strings (PHI: search values such
as names and birth dates) are kept to warnings. Lines are written by a background thread a few
times a second, one `write` for all of them, instead of a write and flush per request; a
warning or worse is written at once, with everything before it.

The per-request line is not even made on the request's thread (`log_later`): the request queues
its arguments and the writer thread makes the record, passes it through the logger (its filters,
levels and handlers, as `Logger.info` would) and formats it, in a batch. Made one at a time
between a request's other work, with the CPU's caches cold, a record and its line cost about
35 µs; made in a batch they cost a few (measured in the gateway process).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import TextIO

QUIET_LOGGERS = ("httpx", "httpcore", "urllib3")
FORMAT = "%(asctime)s %(name)s %(message)s"


class BatchedStreamHandler(logging.Handler):
    """Formats each record at once (so it says when it happened) and writes what gathered
    every `interval` seconds, or at once for WARNING and above, and at exit."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.25,
                 max_lines: int = 2000) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.max_lines = max_lines
        self._lines: list[tuple[float, str]] = []  # (when, line): written in time order
        self._later: list[tuple] = []  # records to make: see `later`
        # One flush at a time, from taking the queue to the write: what a flush took is
        # written before the next flush (at exit, or for a warning) writes what came after.
        self._flushing = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self._running = False  # this process's writer thread was started
        atexit.register(self.flush)
        # gunicorn forks its workers after the handler is made, and a fork keeps no threads:
        # the child starts its own writer at its first record, and drops the lines it
        # inherited unwritten (its parent writes those). Told once, at the fork.
        forked = weakref.WeakMethod(self._forked)  # the hook must not keep the handler alive
        os.register_at_fork(after_in_child=lambda: (hook := forked()) and hook())

    def _forked(self) -> None:
        self._running = False
        self._lines = []
        self._later = []
        self._flushing = threading.RLock()  # not one a parent's thread held at the fork
        self._wake = threading.Event()  # not one a parent's thread may have held at the fork

    def _start_writer(self) -> None:
        self._running = True
        threading.Thread(target=self._run, name="log-writer", daemon=True).start()

    def handle(self, record: logging.LogRecord) -> bool:
        """As `logging.Handler.handle`, without holding the handler's lock around `emit`
        (which takes it for its list alone): a warning's flush waits for a flush under way,
        and one holding the lock there would wait for it in turn."""
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does
            self.handleError(record)
            return
        with self.lock:
            if not self._running:
                self._start_writer()
            self._lines.append((record.created, line))
            full = len(self._lines) >= self.max_lines
        if record.levelno >= logging.WARNING or full:
            self.flush()

    def later(self, logger: logging.Logger, level: int, msg: str, args: tuple) -> None:
        """`logger.log(level, msg, *args)` as of now, its record made by the writer thread,
        for lines below WARNING (a warning goes through `emit`, written at once)."""
        thread = threading.current_thread()
        with self.lock:
            if not self._running:
                self._start_writer()
            self._later.append((time.time(), thread.ident, thread.name, logger, level, msg,
                                args))
            full = len(self._later) >= self.max_lines
        if full:
            self.flush()

    def _make_later(self) -> None:
        """Turn the queued `later` calls into records, handled as their logger would have
        handled them then (the writer's own clock and thread do not show). Runs without the
        handler's lock: the logger may call other handlers, which take their own."""
        with self.lock:
            queued, self._later = self._later, []
        for created, ident, thread_name, logger, level, msg, args in queued:
            record = logger.makeRecord(logger.name, level, "(unknown file)", 0, msg, args,
                                       None)
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0
            record.relativeCreated = (created - logging._startTime) * 1000  # noqa: SLF001
            record.thread, record.threadName = ident, thread_name
            logger.handle(record)

    def flush(self) -> None:
        with self._flushing:
            if self._later:
                self._make_later()
            with self.lock:
                lines, self._lines = self._lines, []
                if not lines:
                    return
                lines.sort(key=lambda item: item[0])  # in time order: `later` lines come last
                try:
                    self.stream.write("\n".join(line for _, line in lines) + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # the stream went away (closed at exit)
                    pass

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self.flush()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()


def log_later(logger: logging.Logger, msg: str, *args) -> None:
    """`logger.info(msg, *args)`, its record made later by the writer thread when the batched
    handler is the only one there is (as `configure_logging` leaves it, which is what `serve`
    runs); at once otherwise (another handler, such as a test's capture, sees it then)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handlers = logging.root.handlers
    if len(handlers) == 1 and type(handlers[0]) is BatchedStreamHandler and logger.propagate \
            and not logger.handlers:
        handlers[0].later(logger, logging.INFO, msg, args)
    else:
        logger.info(msg, *args)


def configure_logging(stream: TextIO | None = None) -> logging.Handler:
    """INFO to `stream` (stderr) through one batched handler on the root logger, without the
    per-record lookups no format here prints."""
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # No caller-frame lookup per record (the logging HOWTO's "Optimization"): no format here
    # prints a function or line. Process and thread ids stay: gunicorn's formats print them.
    logging._srcfile = None  # noqa: SLF001
    logging.logMultiprocessing = False
    return handler
