"""A CSV of reports as exports really are, and a labeled output that only a whole run leaves.

Reading (:class:`ReportRows`): quoted fields may hold line breaks (the normal case for report
text) and be of any length; a UTF-8 byte-order mark is dropped; ``-`` is standard input. Every
problem names the file and its line (1-based, the header is line 1; a record's first line) and
never quotes the report text, which may be patient data. A bad row (a field count other than the
header's, bytes that are not UTF-8, broken quoting) stops the read, or with ``on_bad_row="skip"``
is left out and kept in :attr:`ReportRows.skipped` with its line and reason.

Writing (:func:`written_whole`): the output goes to a hidden file beside the target, renamed onto
it only when the run completed; an error, an interrupt or a full disk leaves no file at the
target (and an earlier file there untouched). ``-`` is standard output, streamed.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cxrlabel.io.records import BadInputError

STANDARD_STREAM = "-"
OnBadRow = Literal["error", "skip"]


@dataclass(frozen=True)
class SkippedRow:
    """A row left out by ``on_bad_row="skip"``: its first line and what was wrong (no text of it)."""

    line: int
    reason: str


def is_standard_stream(path: str | Path) -> bool:
    return str(path) == STANDARD_STREAM


def is_utf8(field: str) -> bool:
    """Whether ``field`` was read from valid UTF-8: under ``surrogateescape`` a byte that was not is
    a lone surrogate, which does not encode."""
    if field.isascii():
        return True
    try:
        field.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ReportRows:
    """The header and the rows of a CSV of reports, every field as text, read one batch at a time
    (memory is bounded by the batch, whatever the file's size). Use as a context manager."""

    def __init__(self, path: str | Path, on_bad_row: OnBadRow = "error"):
        self.name = "<stdin>" if is_standard_stream(path) else str(path)
        self.on_bad_row = on_bad_row
        self.skipped: list[SkippedRow] = []
        self._stdin = is_standard_stream(path)
        binary = sys.stdin.buffer if self._stdin else open(path, "rb")  # noqa: SIM115 (closed in close())
        # surrogateescape: a byte that is not UTF-8 reaches the row check below, which names its line
        self._stream = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        csv.field_size_limit(sys.maxsize)  # a report may be megabytes
        self._reader = csv.reader(self._stream, strict=True)
        self._line = 0  # the last physical line read
        try:
            self.names: list[str] = self._header()
        except BaseException:
            self.close()
            raise

    def _header(self) -> list[str]:
        try:
            names = next(self._reader, None)
        except csv.Error as error:
            raise BadInputError(f"{self.name}: line 1 (header): broken quoting ({error})") from None
        self._line = self._reader.line_num
        if names is None:
            raise BadInputError(f"{self.name}: empty file: no header line")
        if not names:
            raise BadInputError(f"{self.name}: line 1 (header): blank: the first line must name the columns")
        if not all(map(is_utf8, names)):
            raise BadInputError(f"{self.name}: line 1 (header): not valid UTF-8 (re-encode the file as UTF-8)")
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise BadInputError(f"{self.name}: line 1 (header): column names {repeated} appear more than once")
        return names

    def _records(self) -> Iterator[list[str]]:
        """The fields of each record, blank lines left out; a bad one raises or is skipped."""
        while True:
            first = self._line + 1
            try:
                fields = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                self._line = self._reader.line_num
                self._bad(first, f"broken quoting ({error}): a quoted field must be closed, and a quote inside one doubled")
                continue
            self._line = self._reader.line_num
            if not fields:
                continue
            problem = self._problem(fields)
            if problem:
                self._bad(first, problem)
                continue
            yield fields

    def _problem(self, fields: list[str]) -> str | None:
        if len(fields) != len(self.names):
            return f"{len(fields)} fields where the header has {len(self.names)}"
        for name, field in zip(self.names, fields):
            if not is_utf8(field):
                return f"column {name!r} is not valid UTF-8 (re-encode the file as UTF-8)"
        return None

    def _bad(self, line: int, reason: str) -> None:
        if self.on_bad_row == "error":
            raise BadInputError(f"{self.name}: line {line}: {reason} (--on-bad-row skip leaves such rows out)")
        self.skipped.append(SkippedRow(line, reason))

    def batches(self, size: int) -> Iterator[list[list[str]]]:
        """The rows after the header, ``size`` at a time (the last batch may be shorter)."""
        batch: list[list[str]] = []
        for fields in self._records():
            batch.append(fields)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        if self._stdin:
            self._stream.detach()  # leave the process's stdin open
        else:
            self._stream.close()

    def __enter__(self) -> ReportRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def written_whole(path: str | Path) -> Iterator[BinaryIO]:
    """A binary stream for ``path`` that becomes the file at ``path`` only if the block completes:
    it is written to a hidden file beside it (same folder, so the rename is atomic), renamed onto
    ``path`` at the end, and removed if anything (an error, SIGINT, a full disk) stops the block.
    ``-``: standard output, written as it goes."""
    if is_standard_stream(path):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "xb") as stream:  # "x": never another run's file; created with the umask's mode
            yield stream
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
