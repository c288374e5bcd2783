"""Logging for pipeline steps: one log file per rule, plus the terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


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


@contextlib.contextmanager
def logged(path: str | Path, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send log records, and what libraries print (trainer metrics), to ``path`` and the terminal
    while the block runs; a failure is logged with its traceback."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("")
    # append mode: the processes of a job of several (cxrlabel.distributed.launch) append to the
    # same file, and this process's later lines must land after theirs, not over them
    with open(path, "a") as log_file, contextlib.redirect_stdout(_Tee(sys.stdout, log_file)):
        handlers: list[logging.Handler] = [logging.StreamHandler(log_file), logging.StreamHandler(sys.stderr)]
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
