"""An append-only CSV file that one server owns while it runs: the review page's judgements (and
any other page's records kept the same way, such as an audit page's).

Opened and checked before the first request: the parent folder made, the file writable, locked
against a second server (an exclusive ``flock``, released when the process ends, however it
ends), its header exactly the expected columns in order and its last line complete. Each append
is one whole line, written with the columns by name and fsynced before it returns; a failed one
is cut back to where the file ended before it (:class:`AppendFailed`), so that the file stays a
valid CSV for whatever reads it next.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from cxrlabel.io.records import BadInputError


class AppendFailed(Exception):
    """A row was not written (the file is as it was before the attempt)."""


class AppendOnlyCsv:
    """The CSV at ``path`` with ``columns``, created with its header if missing or empty; its rows
    at opening are :attr:`rows`. Raises :class:`BadInputError` naming the file when it cannot be
    written, another server holds it, or its content is not such a file."""

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self._lock = threading.Lock()
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise BadInputError(f"{self.path}: cannot be opened for writing: {error.strerror}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInputError(f"{self.path}: another server is writing to this file (it holds its lock): stop that one, or give this one another file") from None
        self._fd = fd
        try:
            self.rows = self._read_or_create()
        except BaseException:
            self.close()
            raise

    def _line(self, fields: Sequence[str]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer).writerow(fields)  # csv's own line ending (\r\n), as files written before end their lines
        return buffer.getvalue().encode("utf-8")

    def _read_or_create(self) -> list[dict[str, str]]:
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._write_all(self._line(self.columns))
            os.fsync(self._fd)
            directory = os.open(self.path.parent, os.O_RDONLY)  # the new file's name survives a crash too
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            return []
        data = os.pread(self._fd, size, 0)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadInputError(f"{self.path}: byte {error.start}: not UTF-8 text") from None
        header = text.split("\n", 1)[0].rstrip("\r")
        if header != ",".join(self.columns):
            # the header is not echoed: a wrong file's first line may be a report's text
            raise BadInputError(f"{self.path}: line 1 (header): not exactly {','.join(self.columns)} (rows would be written under the wrong columns): "
                                "move this file aside, or point at another one")
        if not text.endswith("\n"):
            raise BadInputError(f"{self.path}: the last line does not end with a line break (a row cut short, or an edit): check it and end it, "
                                "or remove it, before judging on")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        next(reader)
        rows = []
        try:
            for fields in reader:
                if len(fields) != len(self.columns):
                    raise BadInputError(f"{self.path}: line {reader.line_num}: {len(fields)} fields, expected {len(self.columns)}")
                rows.append(dict(zip(self.columns, fields)))
        except csv.Error as error:
            raise BadInputError(f"{self.path}: line {reader.line_num}: not CSV: {error}") from None
        return rows

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def append(self, row: dict[str, str]) -> None:
        """Write ``row`` (every column by name, no other key) as one line and sync it to disk."""
        if set(row) != set(self.columns):
            raise ValueError(f"a row of {self.path.name} has the columns {list(self.columns)}, not {sorted(row)}")
        line = self._line([row[name] for name in self.columns])
        with self._lock:
            if self._fd is None:
                raise AppendFailed(f"{self.path} is closed (an earlier write failed and could not be undone): restart the server, which checks the file")
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                self._write_all(line)
                os.fsync(self._fd)
            except OSError as error:
                try:
                    os.ftruncate(self._fd, end)
                    os.fsync(self._fd)
                except OSError:
                    self.close()  # a partial line may remain: the next start's check names it
                raise AppendFailed(f"writing to {self.path} failed ({error.strerror}): nothing was saved") from error

    def close(self) -> None:
        """Release the file (and its lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AppendOnlyCsv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
