"""Logging for pipeline steps: one log file per rule, plus the terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


class _Tee:
    """A text stream that writes to several (the terminal and the log file)."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def __getattr__(self, name: str):
        """Everything else (isatty, encoding, fileno...) is the terminal's."""
        return getattr(self.streams[0], name)


def _pump(source: int, *sinks: BinaryIO) -> None:
    """Copy the pipe at ``source`` into ``sinks`` until it closes. A sink that fails is dropped and
    the pipe still drained: a full pipe would block every write to stderr."""
    live = list(sinks)
    with open(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            for sink in list(live):
                try:
                    sink.write(chunk)
                    sink.flush()
                except (OSError, ValueError):  # ValueError: closed after the join gave up on a child
                    live.remove(sink)


@contextlib.contextmanager
def _stderr_copied(log_path: str | Path) -> Iterator[TextIO]:
    """Copy what this process writes to its stderr (file descriptor 2) into ``log_path`` while the
    block runs, and yield a stream to the terminal's stderr itself. At the descriptor, not
    ``sys.stderr``: transformers' handler (its logger does not propagate) holds the stderr of its
    import, and warnings, tqdm bars and C extensions write there too (a job of several processes
    sends their descriptors to the log: :func:`cxrlabel.distributed.launch`)."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    with open(os.dup(terminal), "wb") as terminal_bytes, open(log_path, "ab") as log_bytes:
        pump = threading.Thread(target=_pump, args=(read_end, terminal_bytes, log_bytes), daemon=True)
        pump.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            with open(terminal, "w", buffering=1, closefd=False) as terminal_text:
                yield terminal_text
        finally:
            sys.stderr.flush()
            os.dup2(terminal, 2)  # the pipe's last write end closes: the pump reads to its end
            os.close(terminal)
            pump.join(timeout=10)  # a child still holding the pipe must not hang the job


def _not_printed_by_its_library(record: logging.LogRecord) -> bool:
    """False for a record that a handler of its own library's logger has printed already: that
    handler writes to the stderr the log copies (transformers propagates its records too, to the
    root, where the environment sets ``CI``), so the record must not be written twice."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.getLogger():
        if logger.handlers:
            return False
        if not logger.propagate:
            break
        logger = logger.parent
    return True


@contextlib.contextmanager
def logged(path: str | Path, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records, and what libraries print (trainer metrics, their loggers, warnings,
    progress bars), to ``path`` and the terminal while the block runs; a failure is logged with its
    traceback."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("")
    # append mode: the processes of a job of several (cxrlabel.distributed.launch) append to the
    # same file, and this process's later lines must land after theirs, not over them
    with (
        open(path, "a", buffering=1) as log_file,
        _stderr_copied(path) as terminal,
        contextlib.redirect_stdout(_Tee(sys.stdout, log_file)),
    ):
        handlers: list[logging.Handler] = [logging.StreamHandler(log_file), logging.StreamHandler(terminal)]
        for handler in handlers:
            handler.addFilter(_not_printed_by_its_library)
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)
        logger = logging.getLogger("cxrlabel")
        try:
            yield logger
        except Exception:
            logger.exception("failed")
            raise
        finally:
            for handler in handlers:
                handler.flush()
                logging.getLogger().removeHandler(handler)
